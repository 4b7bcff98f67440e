"""MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised
Vision Transformers").

A query network (encoder -> projector -> predictor) learns by gradient descent; a
key network (encoder -> projector) follows it as an exponential moving average,
``key <- m key + (1 - m) query`` after every optimiser step, with m rising from
``moco_v3.momentum`` to 1 on a half cosine, and is never differentiated. No
queue: the loss is the symmetric ``ctr(q1, k2) + ctr(q2, k1)`` against the keys
of the whole global batch (``losses.moco_v3_ctr``).

``config.moco_v3``: ``loss``, ``ctr`` (MoCo v3's) or ``dcl`` (the decoupled
form of Yeh et al. 2022: each query's own key left out of the denominator);
``predictor``: False drops the prediction head, and the query is the projection
(one of the MoCo v3 paper's ablations).

BatchNorm is synchronised everywhere, as MoCo v3's code converts every BN to
SyncBatchNorm, and each view goes through the networks separately: each view's
global batch is one BN group (``base.apply_per_view``).

State: the key network's parameters and BatchNorm statistics are ``extra`` in
the train state (``key_params``, ``key_batch_stats``), replicated like the
parameters and checkpointed with them. ``configs/moco_v3.py``.
"""

import jax.numpy as jnp

from cvrl_jax import losses, parallel
from cvrl_jax.methods import base


# config.moco_v3.loss: whether ctr is decoupled.
DECOUPLED = {"ctr": False, "dcl": True}


class MoCoV3(base.MomentumMethod):
  defaults = {"moco_v3": dict(momentum=0.99,  # at step 0; rises to 1 on a half cosine
                              temperature=1.0, loss="ctr", predictor=True)}

  def __init__(self, config, num_classes, total_steps):
    super().__init__(config, num_classes, total_steps)
    base.choice("moco_v3.loss", config.moco_v3.loss, DECOUPLED)

  def net(self, axis_name):
    return base.mlp_net(self.config, axis_name, self.num_classes,
                        predictor=self.config.moco_v3.predictor)

  def momentum(self, step):
    return base.cosine_momentum(step, self.total_steps, self.config.moco_v3.momentum)

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng
    q, logits, k, batch_stats, extra = self.apply_both_per_view(
        params, batch_stats, extra, batch["views"], axis_name)
    (q1, q2), (k1, k2) = jnp.split(q, 2), jnp.split(k, 2)
    m = self.config.moco_v3
    decoupled = base.choice("moco_v3.loss", m.loss, DECOUPLED)
    ctr = lambda q, k: losses.moco_v3_ctr(q, k, temperature=m.temperature, axis_name=axis_name,
                                          decoupled=decoupled)
    loss = parallel.pmean(ctr(q1, k2) + ctr(q2, k1), axis_name)
    return base.with_probe(loss, logits[:q1.shape[0]], batch["label"], axis_name, batch_stats,
                           extra, key_momentum=self.momentum(step))


METHODS = {"moco_v3": MoCoV3}
