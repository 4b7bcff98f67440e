"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

One network, no negatives, no momentum encoder: each view's projection ``z`` goes
through a predictor to ``p``, and ``p`` of one view regresses onto the
stop-gradient ``z`` of the other (``losses.simsiam_loss``),

    L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2,   D(p, z) = -cos(p, z),

averaged over the global batch. The stop-gradient is what prevents collapse
(the paper's section 4.1); the predictor is needed too (section 4.2).

Each view goes through the network separately, as in the reference code: two
BatchNorm groups, each synchronised over the mesh (``base.apply_per_view``). The
loss of an image involves only its own two views, so the mean of the devices'
losses is the loss of the global batch. No hyper-parameters of its own: the
projector is ``config.head``, the predictor ``config.predictor``.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from cvrl_jax import losses, parallel
from cvrl_jax.methods import base


def global_std(z: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """Mean over dimensions of the per-dimension std of ``z`` over the global batch."""
  _, var = losses.global_moments(z, axis_name)
  return jnp.mean(jnp.sqrt(var))


class SimSiam(base.Method):

  def net(self, axis_name):
    return base.mlp_net(self.config, axis_name, self.num_classes, predictor=True)

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    (_, (z, _), p, logits), batch_stats = base.apply_per_view(
        self.net(axis_name), params, batch_stats, batch["views"])
    (z1, z2), (p1, p2) = jnp.split(z, 2), jnp.split(p, 2)
    loss = parallel.pmean(losses.simsiam_loss(p1, p2, z1, z2), axis_name)
    # Collapse shows as a vanishing per-dimension std of the normalised output
    # (the paper's figure 2): 1/sqrt(d) when healthy, 0 when collapsed.
    return base.with_probe(loss, logits[:z1.shape[0]], batch["label"], axis_name, batch_stats,
                           extra, z_std=global_std(losses.l2_normalize(z1), axis_name))


METHODS = {"simsiam": SimSiam}
