"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

An online network (encoder -> projector -> predictor) learns to predict, from
one view, the projection of the other view by a target network (encoder ->
projector) that is an exponential moving average of the online one and is never
differentiated (``losses.byol_loss``):

    L = l(p1, sg(z2')) + l(p2, sg(z1')),   l(p, z) = mean_i || p_i/|p_i| - z_i/|z_i| ||^2
                                                   = mean_i (2 - 2 cos(p_i, z_i)),

where ``z'`` are the target's projections. After every optimiser step the
target moves towards the online network, ``target <- tau target + (1 - tau)
online``, with tau rising from tau_0 (``byol.tau``: 0.996 on ImageNet, 0.99 on
CIFAR) to 1 on a half cosine over training (the paper's section 3.2).

Each view goes through both networks separately, one BatchNorm group per view
synchronised over the mesh (BYOL's global BN); the loss of an image involves only
its own views, so the mean of the devices' losses is the loss of the global
batch. State: the target's parameters and BatchNorm statistics, ``extra``'s
``key_params`` and ``key_batch_stats`` (MoCo's names, which BYOL's checkpoints
have always used).
"""

import jax.numpy as jnp

from cvrl_jax import losses, parallel
from cvrl_jax.methods import base


class BYOL(base.MomentumMethod):
  defaults = {"byol": dict(tau=0.996)}  # at step 0; rises to 1 on a half cosine

  def net(self, axis_name):
    return base.mlp_net(self.config, axis_name, self.num_classes, predictor=True)

  def momentum(self, step):
    return base.cosine_momentum(step, self.total_steps, self.config.byol.tau)

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng
    p, logits, z, batch_stats, extra = self.apply_both_per_view(
        params, batch_stats, extra, batch["views"], axis_name)
    (p1, p2), (z1, z2) = jnp.split(p, 2), jnp.split(z, 2)
    loss = parallel.pmean(losses.byol_loss(p1, p2, z1, z2), axis_name)
    return base.with_probe(loss, logits[:p1.shape[0]], batch["label"], axis_name, batch_stats,
                           extra, tau=self.momentum(step))


METHODS = {"byol": BYOL}
