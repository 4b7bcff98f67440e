"""SupCon (Khosla et al. 2020, "Supervised Contrastive Learning").

SimCLR's network (encoder -> projection head, both views in one batch) with the
labels deciding the positives: every other view of the same class in the global
batch is a positive of an anchor, not only the other view of its image. The
paper's L_out, over the 2N views of the global batch:

    L = 1/(2N) sum_i -1/|P(i)| sum_{p in P(i)} log softmax_p(z_i . z_a / tau, a != i),

with ``P(i)`` the views other than ``i`` with ``i``'s label (never empty: the
other view of its image). With distinct labels it is exactly NT-Xent.

Global batch: the candidates and their labels are gathered over the mesh, each
device averages over its own 2n anchors, and the mean over devices is the
single-device loss of the global batch. Labels come from the train batch
(``batch["label"]``); this method is supervised.
"""

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from cvrl_jax import losses
from cvrl_jax.methods import simclr

# Logit of an anchor with itself: vanishes under softmax, finite so 0 * it stays 0.
_LARGE_NUM = 1e9


def _gather(x: jax.Array, axis_name: Optional[str]) -> jax.Array:
  return x if axis_name is None else lax.all_gather(x, axis_name, tiled=True)


def supcon_loss(z1: jax.Array, z2: jax.Array, labels: jax.Array, *, temperature: float,
                axis_name: Optional[str] = None) -> jax.Array:
  """L_out over the global batch, averaged over this device's 2n anchors.

  Args:
    z1, z2: projections of the two views of the local n images, (n, d);
      normalised here.
    labels: the images' classes, (n,).
    temperature: tau (0.1 in the paper).
    axis_name: mesh axis over which the global batch is sharded, or None.
  """
  z1, z2 = losses.l2_normalize(z1), losses.l2_normalize(z2)
  n = z1.shape[0]
  offset = 0 if axis_name is None else lax.axis_index(axis_name) * n
  total = n if axis_name is None else n * lax.axis_size(axis_name)
  # Candidates in the order [view 1 of the global batch, view 2 of the global batch].
  candidates = jnp.concatenate([_gather(z1, axis_name), _gather(z2, axis_name)])
  labels_all = jnp.tile(_gather(labels, axis_name), 2)
  anchors = jnp.concatenate([z1, z2])
  self_index = jnp.concatenate([offset + jnp.arange(n), total + offset + jnp.arange(n)])
  is_self = jax.nn.one_hot(self_index, 2 * total)
  logits = anchors @ candidates.T / temperature - is_self * _LARGE_NUM
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  positive = (jnp.tile(labels, 2)[:, None] == labels_all[None, :]) * (1.0 - is_self)
  per_anchor = -jnp.sum(positive * log_prob, axis=-1) / jnp.sum(positive, axis=-1)
  return jnp.mean(per_anchor)


class SupCon(simclr.SimCLR):
  """SimCLR's network, batching and probe; the SupCon loss instead of NT-Xent."""

  def contrastive_loss(self, z1, z2, batch, axis_name):
    return supcon_loss(z1, z2, batch["label"], temperature=self.config.temperature,
                       axis_name=axis_name)


METHODS = {"supcon": SupCon}
