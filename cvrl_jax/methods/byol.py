"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

An online network (encoder -> projector -> predictor) learns to predict, from
one view, the projection of the other view by a target network (encoder ->
projector) that is an exponential moving average of the online one and is never
differentiated:

    L = l(p1, sg(z2')) + l(p2, sg(z1')),   l(p, z) = mean_i || p_i/|p_i| - z_i/|z_i| ||^2
                                                   = mean_i (2 - 2 cos(p_i, z_i)),

where ``z'`` are the target's projections. After every optimiser step the
target moves towards the online network, ``target <- tau target + (1 - tau)
online``, with tau rising from tau_0 (0.996 on ImageNet, 0.99 on CIFAR) to 1 on
a half cosine over training (the paper's section 3.2).

Structurally this is MoCo v3's network pair (``moco.MoCoV3``, which took it from
BYOL): the online network is MoCo's query network with a predictor, the target
its key network, updated in ``after_update`` with ``moco.momentum_update``. Only
the loss and the name of the rate differ, so BYOL subclasses it. Each view goes
through both networks separately, one BatchNorm group per view synchronised
over the mesh (BYOL's global BN); the loss of an image involves only its own
views, so the mean of the devices' losses is the loss of the global batch.
"""

import jax
import jax.numpy as jnp
from jax import lax

from cvrl_jax import losses
from cvrl_jax.methods import base, moco


def normalized_mse(p: jax.Array, z: jax.Array) -> jax.Array:
  """``mean_i || p_i/|p_i| - z_i/|z_i| ||^2 = mean_i (2 - 2 cos(p_i, z_i))``;
  ``z`` (the target) is not differentiated."""
  cos = jnp.sum(losses.l2_normalize(p) * losses.l2_normalize(lax.stop_gradient(z)), axis=-1)
  return jnp.mean(2.0 - 2.0 * cos)


def byol_loss(p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array) -> jax.Array:
  """Symmetric: view 1's prediction against view 2's target projection and the
  reverse; in [0, 8]."""
  return normalized_mse(p1, z2) + normalized_mse(p2, z1)


class BYOL(moco.MoCoV3):
  """Online = MoCo v3's query network, target = its key network (``extra``)."""

  def momentum(self, step):
    return moco.cosine_momentum(step, self.total_steps, self.config.byol.tau)

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng
    x1, x2 = batch["views"]
    views = jnp.concatenate([x1, x2])
    (_, p, logits), batch_stats = moco.apply_in_groups(
        self._query_net(axis_name), {"params": params, "batch_stats": batch_stats}, views, 2)
    z, target_batch_stats = moco.apply_in_groups(
        self._key_net(axis_name), self._key_variables(extra), views, 2)
    (p1, p2), (z1, z2) = jnp.split(p, 2), jnp.split(z, 2)
    loss = base.pmean(byol_loss(p1, p2, z1, z2), axis_name)
    probe_loss, metrics = base.probe_loss_and_metrics(logits[:x1.shape[0]], batch["label"],
                                                      axis_name)
    metrics.update(loss=loss, tau=self.momentum(step))
    return loss + probe_loss, (batch_stats, {**extra, "key_batch_stats": target_batch_stats},
                               metrics)


METHODS = {"byol": BYOL}
