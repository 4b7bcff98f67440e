"""Barlow Twins (Zbontar et al. 2021, "Self-Supervised Learning via Redundancy
Reduction").

One network (encoder -> projector, 8192-8192-8192 on ImageNet). Each dimension
of the two views' projections is standardised over the batch, and their
cross-correlation matrix ``C`` (d x d) is pushed towards the identity:

    L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2,
    C_ij = (1/N) sum_b z1n_bi z2n_bj,

the first term making the views' features invariant, the second decorrelating
the features (lambda = 0.0051, the paper's 5e-3 ~ 1/d scaled for d = 8192).

Global batch: the means and variances that standardise each dimension, and the
sum over samples in ``C``, run over the whole global batch (``pmean`` /
``psum``), so every device holds the same ``C`` and the same loss, equal to the
single-device loss of the concatenated batch; the gradients flow back through
the collectives to every device's samples.

Each view goes through the network separately (two BatchNorm groups, each
synchronised over the mesh), as in the reference code.
"""

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from cvrl_jax import models
from cvrl_jax.methods import base, moco, simclr, simsiam
from cvrl_jax.models.heads import MLPHead


def standardize(z: jax.Array, axis_name: Optional[str], eps: float = 1e-5) -> jax.Array:
  """Each column to zero mean and unit (biased) variance over the global batch:
  a BatchNorm without scale and offset, as the paper applies before ``C``."""
  z = z.astype(jnp.float32)
  mean = base.pmean(jnp.mean(z, axis=0), axis_name)
  var = base.pmean(jnp.mean(jnp.square(z - mean), axis=0), axis_name)
  return (z - mean) * lax.rsqrt(var + eps)


def cross_correlation(z1: jax.Array, z2: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """``C`` (d x d) of the standardised projections over the global batch."""
  n = z1.shape[0] * (1 if axis_name is None else lax.axis_size(axis_name))
  local = standardize(z1, axis_name).T @ standardize(z2, axis_name)
  return (local if axis_name is None else lax.psum(local, axis_name)) / n


def barlow_twins_loss(z1: jax.Array, z2: jax.Array, *, lambd: float,
                      axis_name: Optional[str] = None) -> jax.Array:
  """``sum_i (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2``; the same value on every
  device, the loss of the global batch."""
  c = cross_correlation(z1, z2, axis_name)
  diag = jnp.diagonal(c)
  on_diag = jnp.sum(jnp.square(1.0 - diag))
  off_diag = jnp.sum(jnp.square(c)) - jnp.sum(jnp.square(diag))
  return on_diag + lambd * off_diag


class BarlowTwins(base.Method):

  def _net(self, axis_name: Optional[str]) -> simclr.SimCLRNet:
    head = self.config.head
    # BN + ReLU after every hidden layer, a plain linear output (standardised in the loss).
    projector = MLPHead([head.hidden_dim] * (head.num_layers - 1) + [head.output_dim],
                        last_bn=False, axis_name=axis_name)
    return simclr.SimCLRNet(models.make_encoder(self.config.model, axis_name), projector,
                            self.num_classes)

  def init(self, rng, images):
    variables = self._net(None).init(rng, images, train=False)
    return variables["params"], variables["batch_stats"], {}

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    x1, x2 = batch["views"]
    (_, z, logits), batch_stats = moco.apply_in_groups(
        self._net(axis_name), {"params": params, "batch_stats": batch_stats},
        jnp.concatenate([x1, x2]), 2)
    z1, z2 = jnp.split(z, 2)
    loss = barlow_twins_loss(z1, z2, lambd=self.config.barlow_twins.lambd, axis_name=axis_name)
    probe_loss, metrics = base.probe_loss_and_metrics(logits[:x1.shape[0]], batch["label"],
                                                      axis_name)
    metrics["loss"] = loss
    return loss + probe_loss, (batch_stats, extra, metrics)

  def features(self, params, batch_stats, images):
    return simsiam.encoder_features(self.config, params, batch_stats, images)


METHODS = {"barlow_twins": BarlowTwins}
