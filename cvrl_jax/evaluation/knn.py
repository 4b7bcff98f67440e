"""Weighted k-nearest-neighbour classification on frozen features, and the monitor.

The standard SSL monitor (Wu et al. 2018, InstDisc; used by MoCo, DINO and
solo-learn): cosine similarity to a labelled bank of training features, the k
most similar vote for their class with weight exp(sim / T). ``monitor`` runs it
on a run's current encoder (pre-training's ``knn_top1``, ``configs/knn_eval.py``).
"""

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from cvrl_jax import loop, parallel
from cvrl_jax.data import pipeline
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


def method_features(method) -> Callable[[Any, dict], Any]:
  """Jitted (``method.features``, labels) of a global batch, from a train state:
  what pre-training's monitor evaluates."""
  def features(state, batch):
    return method.features(state.params, state.batch_stats, batch["image"]), batch["label"]
  return parallel.first_run_together(jax.jit(features))


def monitor(config: ml_collections.ConfigDict, features_fn: Callable[[Any, dict], Any],
            variables: Any, mesh: jax.sharding.Mesh, num_classes: int) -> float:
  """kNN top-1 (%) of the eval split against a bank of train-split features.

  ``features_fn(variables, global_batch)`` gives (features, labels) of a batch;
  ``config.knn`` sets k, T, the batch and how many examples of each split to use
  (0: the whole split).
  """
  kc = config.knn
  local_batch = parallel.check_batch_size(kc.batch_size, mesh, "knn.batch_size")

  def run(split, num):
    ds, _ = pipeline.eval_dataset(config, split, local_batch, num or None)
    batches = (parallel.host_to_global(b, mesh) for b in pipeline.as_numpy(ds))
    return extract(
        lambda b: multihost_utils.process_allgather(features_fn(variables, b), tiled=True),
        batches)

  with loop.reading(config, "for the kNN monitor"):
    bank, bank_labels = run(config.train_split, kc.num_train_examples)
    queries, labels = run(config.eval_split, kc.num_eval_examples)
  return knn_top1(queries, labels, bank, bank_labels, num_classes=num_classes,
                  k=kc.k, temperature=kc.temperature)
