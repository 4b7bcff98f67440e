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


def moco_infonce(q: jax.Array, k: jax.Array, queue: jax.Array, *,
                 temperature: float) -> jax.Array:
  """MoCo v1 / v2's InfoNCE against a queue of negative keys.

  Args:
    q: queries, (n, c); they carry the gradient.
    k: the positive key of each query, (n, c); row i is query i's positive.
    queue: negative keys from earlier batches, (K, c).
    temperature: tau (0.07 in MoCo v1, 0.2 in v2).

  Returns:
    The mean over the n queries of cross-entropy(``[q.k, q.queue^T] / tau``, 0):
    the positive is logit 0, the K queue entries are the negatives. All rows
    are L2-normalised here. The loss is local to the queries given, so
    ``lax.pmean`` of it over a mesh is the loss of the global batch.
  """
  q, k, queue = l2_normalize(q), l2_normalize(k), l2_normalize(queue)
  positive = jnp.sum(q * k, axis=-1, keepdims=True)
  logits = jnp.concatenate([positive, q @ queue.T], axis=1) / temperature
  return _cross_entropy(logits, jnp.zeros(q.shape[0], jnp.int32))


def moco_v3_ctr(q: jax.Array, k: jax.Array, *, temperature: float,
                axis_name: Optional[str] = None) -> jax.Array:
  """MoCo v3's contrastive loss ``ctr(q, k)`` with the keys of the global batch.

  Args:
    q: predictions of one view, (n, c).
    k: momentum-encoder keys of the other view of the same n images, (n, c).
    temperature: tau (1.0 for ResNet-50, 0.2 for ViT in MoCo v3).
    axis_name: mesh axis over which the global batch is sharded, or None.

  Returns:
    ``2 tau * CE(q . k_all^T / tau, labels)``, where ``k_all`` is ``k``
    gathered over ``axis_name`` (or ``k`` itself) and each query's label is
    the row of its own key in ``k_all``; averaged over the local queries, so
    that ``lax.pmean`` over the mesh is the single-device loss of the global
    batch. The factor 2 tau is MoCo v3's, making the gradient scale roughly
    independent of tau. Rows are L2-normalised here.
  """
  q, k = l2_normalize(q), l2_normalize(k)
  k_all = _gather(k, axis_name)
  labels = _global_row_offset(q.shape[0], axis_name) + jnp.arange(q.shape[0])
  return 2.0 * temperature * _cross_entropy(q @ k_all.T / temperature, labels)
