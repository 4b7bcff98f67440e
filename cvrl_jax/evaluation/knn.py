"""Weighted k-nearest-neighbour classification on frozen features.

The standard SSL monitor (Wu et al. 2018, InstDisc; used by MoCo, DINO and
solo-learn): cosine similarity to a labelled bank of training features, the k
most similar vote for their class with weight exp(sim / T).
"""

from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from cvrl_jax.losses import l2_normalize


@jax.jit(static_argnames=("num_classes", "k"))
def knn_predict(queries: jax.Array, bank: jax.Array, bank_labels: jax.Array, *,
                num_classes: int, k: int = 200, temperature: float = 0.1) -> jax.Array:
  """Class scores [q, num_classes] for each query; rows need not be normalised.

  Bank rows labelled -1 (padding) never vote.
  """
  sim = l2_normalize(queries) @ l2_normalize(bank).T
  sim = jnp.where(bank_labels[None, :] >= 0, sim, -jnp.inf)
  top_sim, top_idx = jax.lax.top_k(sim, min(k, bank.shape[0]))
  weights = jnp.where(jnp.isfinite(top_sim), jnp.exp(top_sim / temperature), 0.0)
  votes = jax.nn.one_hot(bank_labels[top_idx], num_classes) * weights[..., None]
  return votes.sum(axis=1)


def knn_top1(queries: np.ndarray, query_labels: np.ndarray, bank: np.ndarray,
             bank_labels: np.ndarray, *, num_classes: int, k: int = 200,
             temperature: float = 0.1, chunk: int = 1024) -> float:
  """Top-1 accuracy in percent over queries whose label is >= 0 (not padding)."""
  bank, bank_labels = jnp.asarray(bank), jnp.asarray(bank_labels)
  correct, total = 0, 0
  for start in range(0, len(queries), chunk):
    q, y = queries[start:start + chunk], query_labels[start:start + chunk]
    pred = np.asarray(jnp.argmax(knn_predict(
        jnp.asarray(q), bank, bank_labels, num_classes=num_classes, k=k,
        temperature=temperature), axis=-1))
    valid = y >= 0
    correct += int(np.sum((pred == y) & valid))
    total += int(np.sum(valid))
  return 100.0 * correct / max(total, 1)


def extract(features_fn: Callable[[dict], jax.Array],
            batches: Iterable[dict]) -> tuple[np.ndarray, np.ndarray]:
  """Features and labels (padding rows labelled -1) of every batch, on the host."""
  feats, labels = [], []
  for batch in batches:
    f, y = features_fn(batch)
    feats.append(np.asarray(f, np.float32))
    labels.append(np.asarray(y))
  return np.concatenate(feats), np.concatenate(labels)
