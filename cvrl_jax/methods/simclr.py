"""SimCLR v1 / v2 (Chen et al. 2020a, 2020b): one encoder, an MLP head, NT-Xent.

Both views go through the network as one batch, so BatchNorm (global over the mesh)
normalises them together, as in the reference implementation. v1 and v2 differ
only in configuration: the head's depth (2 vs 3 layers), the encoder's width and
selective kernels.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvrl_jax import losses, models
from cvrl_jax.methods import base
from cvrl_jax.models.heads import MLPHead


class SimCLRNet(nn.Module):
  """Encoder -> projection head; plus the online probe on the stop-gradient features."""
  encoder: nn.Module
  head: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, images: jax.Array, train: bool):
    h = self.encoder(images, train=train)
    z, hiddens = self.head(h, train=train)  # hiddens[0] is h
    logits = nn.Dense(self.num_classes, name="probe")(jax.lax.stop_gradient(h))
    return hiddens, z, logits


class SimCLR(base.Method):

  def _net(self, axis_name: Optional[str]) -> SimCLRNet:
    head = self.config.head
    dims = [head.hidden_dim] * (head.num_layers - 1) + [head.output_dim]
    return SimCLRNet(models.make_encoder(self.config.model, axis_name),
                     MLPHead(dims, axis_name=axis_name), self.num_classes)

  def init(self, rng, images):
    variables = self._net(None).init(rng, images, train=False)
    return variables["params"], variables["batch_stats"], {}

  def contrastive_loss(self, z1: jax.Array, z2: jax.Array, batch: dict,
                       axis_name: Optional[str]) -> jax.Array:
    """NT-Xent of the projections, this device's share (SupCon's uses the labels)."""
    return losses.nt_xent(z1, z2, temperature=self.config.temperature, axis_name=axis_name)

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    v1, v2 = batch["views"]
    (_, z, logits), updates = self._net(axis_name).apply(
        {"params": params, "batch_stats": batch_stats},
        jnp.concatenate([v1, v2]), train=True, mutable=["batch_stats"])
    z1, z2 = jnp.split(z, 2)
    loss = base.pmean(self.contrastive_loss(z1, z2, batch, axis_name), axis_name)
    labels = jnp.concatenate([batch["label"], batch["label"]])
    probe_loss, metrics = base.probe_loss_and_metrics(logits, labels, axis_name)
    return loss + probe_loss, (updates["batch_stats"], extra, {"loss": loss, **metrics})

  def features(self, params, batch_stats, images):
    """Encoder output, or with ``representation_layer=1`` the head's first layer
    (SimCLR v2 fine-tunes from there)."""
    hiddens, _, _ = self._net(None).apply(
        {"params": params, "batch_stats": batch_stats}, images, train=False)
    return hiddens[self.config.get("representation_layer", 0)]


METHODS = {"simclr": SimCLR}
