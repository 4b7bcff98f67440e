"""SimCLR v1 / v2 (Chen et al. 2020a, 2020b): one encoder, an MLP head, NT-Xent.

Both views go through the network as one batch, so BatchNorm (global over the mesh)
normalises them together, as in the reference implementation, and the loss is
``losses.nt_xent`` of the two views' projections over the global batch. v1 and v2
differ only in configuration: the head's depth (2 vs 3 layers), the encoder's
width and selective kernels.

``config.simclr``: ``temperature``; ``representation_layer``, what kNN and the
linear probe see during training: 0 the encoder's output, 1 the head's first
layer (SimCLR v2 fine-tunes from there).
"""

import jax.numpy as jnp

from cvrl_jax import losses, parallel
from cvrl_jax.methods import base


class SimCLR(base.Method):
  defaults = {"simclr": dict(temperature=0.1, representation_layer=0)}

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    (_, (z, _), _, logits), batch_stats = base.apply_together(
        self.net(axis_name), params, batch_stats, batch["views"])
    z1, z2 = jnp.split(z, 2)
    loss = losses.nt_xent(z1, z2, temperature=self.config.simclr.temperature,
                          axis_name=axis_name)
    labels = jnp.concatenate([batch["label"]] * 2)  # the probe learns from both views
    return base.with_probe(parallel.pmean(loss, axis_name), logits, labels, axis_name,
                           batch_stats, extra)

  def features(self, params, batch_stats, images):
    _, (_, hiddens), _, _ = self.net(None).apply(
        {"params": params, "batch_stats": batch_stats}, images, train=False)
    return hiddens[self.config.simclr.representation_layer]  # hiddens[0]: the encoder's


METHODS = {"simclr": SimCLR}
