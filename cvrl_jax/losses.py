"""Contrastive losses, written once for one device and for a device mesh.

Every loss takes the *local* shard of the batch. With ``axis_name=None`` it is the
plain single-device loss. With ``axis_name`` set (inside ``jax.shard_map`` or
``jax.pmap``) the negatives come from the whole global batch through
``lax.all_gather`` and the value returned is the mean over the device's own anchors,
so that ``lax.pmean`` of it over the axis equals the single-device loss of the
concatenated global batch. That equality is what makes a run on 8 devices give the
same losses as a run on 1 (``tests/test_losses.py``).
"""

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

# Logit given to an anchor's similarity with itself: large enough to vanish under
# softmax, finite so that 0 * mask stays 0 (an -inf would give NaN gradients).
_LARGE_NUM = 1e9


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """Unit-length rows; eps keeps the gradient finite at zero."""
  x = x.astype(jnp.float32)
  return x * lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps))


def _gather(x: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """The global batch (devices in axis order) or ``x`` itself on one device."""
  if axis_name is None:
    return x
  return lax.all_gather(x, axis_name, tiled=True)


def _global_row_offset(n: int, axis_name: Optional[str]) -> jax.Array:
  """Index of this device's first row inside the gathered global batch."""
  if axis_name is None:
    return jnp.zeros((), jnp.int32)
  return lax.axis_index(axis_name) * n


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy with integer labels, in float32."""
  logits = logits.astype(jnp.float32)
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  return jnp.mean(logz - picked)


def nt_xent(z1: jax.Array, z2: jax.Array, *, temperature: float,
            axis_name: Optional[str] = None) -> jax.Array:
  """SimCLR's normalised temperature-scaled cross-entropy (NT-Xent).

  Args:
    z1, z2: projections of the two views of the same n images, shape (n, d); row k
      of ``z1`` and row k of ``z2`` are a positive pair. Normalised here.
    temperature: softmax temperature tau (0.1 for ImageNet, 0.5 for CIFAR-10).
    axis_name: mesh axis over which the global batch is sharded, or None.

  Returns:
    L = 1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)] over the N pairs of the global
    batch, where l(i, j) = -log softmax_j(sim(i, .) / tau) with cosine similarity
    and the anchor itself excluded. With ``axis_name`` the mean is over this
    device's 2n anchors (every device holds the same n, so pmean gives L).
  """
  z1, z2 = l2_normalize(z1), l2_normalize(z2)
  n = z1.shape[0]
  z1_all, z2_all = _gather(z1, axis_name), _gather(z2, axis_name)
  labels = _global_row_offset(n, axis_name) + jnp.arange(n)
  self_mask = jax.nn.one_hot(labels, z1_all.shape[0]) * _LARGE_NUM

  def anchor_loss(anchor, same_view_all, other_view_all):
    # Candidates for each anchor: all 2N views except itself; the positive is
    # the other view of the same image.
    pos_and_negs = anchor @ other_view_all.T / temperature
    negs_same_view = anchor @ same_view_all.T / temperature - self_mask
    logits = jnp.concatenate([pos_and_negs, negs_same_view], axis=1)
    return _cross_entropy(logits, labels)

  return 0.5 * (anchor_loss(z1, z1_all, z2_all) + anchor_loss(z2, z2_all, z1_all))
