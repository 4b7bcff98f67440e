"""SimCLR v1 / v2 (Chen et al. 2020a, 2020b): one encoder, an MLP head, NT-Xent.

Both views go through the network as one batch, so BatchNorm (global over the mesh)
normalises them together, as in the reference implementation, and the loss is
``losses.nt_xent`` of the two views' projections over the global batch. v1 and v2
differ only in configuration: the head's depth (2 vs 3 layers), the encoder's
width and selective kernels.

``config.simclr``: ``temperature``; ``representation_layer``, what kNN and the
linear probe see during training: 0 the encoder's output, 1 the head's first
layer (SimCLR v2 fine-tunes from there); ``loss``, the objective: ``nt_xent``
(the default); ``nt_logistic`` and ``margin_triplet`` (with ``margin``), which
SimCLR's table 2 compares with it; or ``dcl``, the decoupled contrastive loss
(Yeh et al. 2022). Each is the function of that name in ``losses``, whose
docstring defines it; all take their negatives from the whole global batch.
"""

import jax.numpy as jnp

from cvrl_jax import losses, parallel
from cvrl_jax.methods import base

# config.simclr.loss: the function, and the key of config.simclr it takes.
LOSSES = {"nt_xent": (losses.nt_xent, "temperature"), "dcl": (losses.dcl, "temperature"),
          "nt_logistic": (losses.nt_logistic, "temperature"),
          "margin_triplet": (losses.margin_triplet, "margin")}


class SimCLR(base.Method):
  defaults = {"simclr": dict(temperature=0.1, representation_layer=0, loss="nt_xent",
                             margin=0.5)}  # margin_triplet's m; not a value from the paper

  def __init__(self, config, num_classes, total_steps):
    super().__init__(config, num_classes, total_steps)
    base.choice("simclr.loss", config.simclr.loss, LOSSES)

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    (_, (z, _), _, logits), batch_stats = base.apply_together(
        self.net(axis_name), params, batch_stats, batch["views"])
    z1, z2 = jnp.split(z, 2)
    s = self.config.simclr
    loss_fn, key = base.choice("simclr.loss", s.loss, LOSSES)
    loss = loss_fn(z1, z2, axis_name=axis_name, **{key: s[key]})
    labels = jnp.concatenate([batch["label"]] * 2)  # the probe learns from both views
    return base.with_probe(parallel.pmean(loss, axis_name), logits, labels, axis_name,
                           batch_stats, extra)

  def features(self, params, batch_stats, images):
    _, (_, hiddens), _, _ = self.net(None).apply(
        {"params": params, "batch_stats": batch_stats}, images, train=False)
    return hiddens[self.config.simclr.representation_layer]  # hiddens[0]: the encoder's


METHODS = {"simclr": SimCLR}
