"""SupCon (Khosla et al. 2020, "Supervised Contrastive Learning").

SimCLR's network and batching (encoder -> projection head, both views in one batch,
BatchNorm global over the mesh) with the labels deciding the positives: every
other view of the same class in the global batch is a positive of an anchor, not
only the other view of its image. The paper's L_out, over the 2N views of the
global batch (``losses.supcon_loss``):

    L = 1/(2N) sum_i -1/|P(i)| sum_{p in P(i)} log softmax_p(z_i . z_a / tau, a != i),

with ``P(i)`` the views other than ``i`` with ``i``'s label (never empty: the
other view of its image). With distinct labels it is exactly NT-Xent.

Global batch: the candidates and their labels are gathered over the mesh, each
device averages over its own 2n anchors, and the mean over devices is the
single-device loss of the global batch. Labels come from the train batch
(``batch["label"]``); this method is supervised. ``config.supcon``: ``temperature``.
"""

import jax.numpy as jnp

from cvrl_jax import losses, parallel
from cvrl_jax.methods import base


class SupCon(base.Method):
  defaults = {"supcon": dict(temperature=0.1)}

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    labels = batch["label"]
    (_, (z, _), _, logits), batch_stats = base.apply_together(
        self.net(axis_name), params, batch_stats, batch["views"])
    z1, z2 = jnp.split(z, 2)
    loss = losses.supcon_loss(z1, z2, labels, temperature=self.config.supcon.temperature,
                              axis_name=axis_name)
    return base.with_probe(parallel.pmean(loss, axis_name), logits, jnp.concatenate([labels] * 2),
                           axis_name, batch_stats, extra)


METHODS = {"supcon": SupCon}
