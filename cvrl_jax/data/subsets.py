"""Labelled fractions of a training split, the same on every machine.

``class_balanced_fraction``: the same number of images from every class, chosen
by a fixed hash of (seed, index), so a run draws the same images on every
machine and numpy version, and a smaller fraction is a subset of a larger one.
ImageNet's standard subsets are TFDS datasets instead
(``imagenet2012_subset/1pct``, ``/10pct``): name them as the dataset.
"""

import csv
import hashlib
import os

import jax
import numpy as np
import tensorflow as tf


def _hash(seed: int, index: np.ndarray) -> np.ndarray:
  """splitmix64 of (seed, index): a fixed pseudo-random order, independent of numpy's RNGs."""
  with np.errstate(over="ignore"):
    z = index.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def class_balanced_fraction(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """Sorted indices of ``round(fraction * N / classes)`` examples of every class.

  Within a class, examples are taken in the order of a hash of (seed, index). A
  class with fewer examples contributes all it has.
  """
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"label_fraction={fraction} must be in (0, 1].")
  if fraction == 1.0:
    return np.arange(len(labels))
  classes = np.unique(labels)
  per_class = max(1, int(round(fraction * len(labels) / len(classes))))
  order = _hash(seed, np.arange(len(labels)))
  chosen = []
  for c in classes:
    members = np.flatnonzero(labels == c)
    chosen.append(members[np.argsort(order[members], kind="stable")[:per_class]])
  return np.sort(np.concatenate(chosen))


def write_listing(path: str, indices: np.ndarray, labels: np.ndarray, ids: list[str]) -> str:
  """Writes ``index,id,label`` rows for the chosen examples; returns a short fingerprint."""
  if jax.process_index() == 0:
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "w") as f:
      w = csv.writer(f)
      w.writerow(["index", "id", "label"])
      for i in indices:
        w.writerow([int(i), ids[i] if ids else "", int(labels[i])])
  return hashlib.sha1(np.asarray(indices, np.int64).tobytes()).hexdigest()[:12]
