"""Labelled input for evaluations: label fractions, crop+flip streams, cached features.

* ``class_balanced_fraction``: the same number of images from every class, chosen
  by a fixed hash of (seed, index), so a run draws the same images on every
  machine and numpy version, and a smaller fraction is a subset of a larger one.
  ImageNet's standard subsets are TFDS datasets instead
  (``imagenet2012_subset/1pct``, ``/10pct``): name them as the dataset.
* ``train_stream``: labelled training batches, randomly cropped and flipped (the
  papers' linear-eval / fine-tuning augmentation) or centre-cropped; like the
  pre-training stream, a pure function of (seed, step), so runs resume exactly.
* ``feature_batches``: batches of precomputed features (linear eval with no
  augmentation computes each image's representation once).
"""

import csv
import hashlib
import os
from typing import Iterator, Optional

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cvrl_jax import augment, input_pipeline

ID_FEATURES = ("id", "file_name", "image/filename")  # how TFDS names an image, if it does


def check_split(config: ml_collections.ConfigDict, split: str) -> int:
  """Number of examples in ``split`` of ``config.dataset``, or an error listing the splits."""
  builder = input_pipeline.get_builder(config)
  splits = builder.info.splits
  if split not in splits:
    raise ValueError(f"{config.dataset} has no split {split!r}; its splits are "
                     f"{sorted(splits.keys())}. Set --config.train_split / --config.eval_split.")
  return input_pipeline.num_examples(builder, split)


def read_labels(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, list[str]]:
  """Labels of every example of ``split`` in order, and their ids ('' if none); no
  image is decoded."""
  builder = input_pipeline.get_builder(config)
  features = builder.info.features
  key = next((k for k in ID_FEATURES if k in features), None)
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.map(lambda x: (x["label"], x[key] if key else tf.constant("")),
              num_parallel_calls=tf.data.AUTOTUNE).batch(8192)
  labels, ids = [], []
  for y, i in tfds.as_numpy(ds):
    labels.append(y)
    ids.extend(v.decode() for v in i)
  return np.concatenate(labels).astype(np.int64), ids


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


def _examples(config: ml_collections.ConfigDict, split: str, indices: Optional[np.ndarray],
              labelled: Optional[np.ndarray]) -> tf.data.Dataset:
  """This process's share of (image, label, labelled) of ``split`` restricted to
  ``indices`` (all if None); ``labelled`` marks examples whose label may be used."""
  builder = input_pipeline.get_builder(config)
  ds = builder.as_dataset(split=split, shuffle_files=False).enumerate()
  total = input_pipeline.num_examples(builder, split)
  if indices is not None:
    keep = np.zeros(total, bool)
    keep[indices] = True
    keep = tf.constant(keep)
    ds = ds.filter(lambda i, x: tf.gather(keep, i))
  mark = tf.constant(np.ones(total, np.float32) if labelled is None
                     else np.isin(np.arange(total), labelled).astype(np.float32))
  ds = ds.map(lambda i, x: {"image": x["image"], "label": tf.cast(x["label"], tf.int32),
                            "labelled": tf.gather(mark, i)},
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.shard(jax.process_count(), jax.process_index())


def _local_count(total: int) -> int:
  """Examples this process holds after ``shard`` of ``total``."""
  return len(range(jax.process_index(), total, jax.process_count()))


def _preprocess(config: ml_collections.ConfigDict, image: tf.Tensor, seed) -> tf.Tensor:
  image = tf.image.convert_image_dtype(image, tf.float32)
  if config.augment == "none":
    return augment.center_crop(image, size=config.image_size,
                               crop_proportion=config.eval_crop_proportion)
  if config.augment != "crop_flip":
    raise ValueError(f"augment={config.augment!r}: use 'crop_flip' or 'none'.")
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  image = augment.random_resized_crop(image, crop_seed, size=config.image_size,
                                      area_range=tuple(config.crop_area))
  return augment.random_flip(image, flip_seed)


def train_stream(config: ml_collections.ConfigDict, local_batch: int, start_step: int,
                 indices: Optional[np.ndarray], labelled: Optional[np.ndarray] = None
                 ) -> tf.data.Dataset:
  """Endless batches {image, label, labelled} of the train split, from ``start_step``.

  Epoch e is shuffled with a seed of (seed, e); each example's augmentation is
  seeded by (seed, process, e * n + position), as in the pre-training stream.
  """
  total = len(indices) if indices is not None else check_split(config, config.train_split)
  n = _local_count(total)
  if n < local_batch:
    raise ValueError(f"{n} training examples on this process are fewer than one batch "
                     f"of {local_batch}: lower --config.batch_size.")
  ds = _examples(config, config.train_split, indices, labelled).cache()
  seed, process = config.seed, jax.process_index()
  first_epoch, offset = divmod(start_step * local_batch, n)

  def epoch(e):
    shuffled = ds.shuffle(n, seed=seed * 100_003 + e, reshuffle_each_iteration=False)
    shuffled = shuffled.enumerate().map(lambda i, x: (e * n + i, x))
    return shuffled.skip(tf.where(e == first_epoch, tf.constant(offset, tf.int64), 0))

  def prepare(counter, x):
    key = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, process], tf.int64), counter)
    return {**x, "image": _preprocess(config, x["image"], key)}

  stream = tf.data.Dataset.range(first_epoch, 1 << 62).flat_map(epoch)
  stream = stream.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  return stream.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def one_pass(config: ml_collections.ConfigDict, split: str, local_batch: int,
             indices: Optional[np.ndarray]) -> tf.data.Dataset:
  """Every example of ``split`` (restricted to ``indices``) once, centre-cropped,
  padded like ``input_pipeline.eval_dataset`` (mask 0, label -1) to whole batches
  that are equally many on every process."""
  if indices is None:
    return input_pipeline.eval_dataset(config, split, local_batch)[0]
  per_process = -(-len(indices) // jax.process_count())
  num_batches = -(-per_process // local_batch)

  def prepare(x):
    image = augment.center_crop(tf.image.convert_image_dtype(x["image"], tf.float32),
                                size=config.image_size,
                                crop_proportion=config.eval_crop_proportion)
    return {"image": image, "label": x["label"], "mask": tf.constant(1.0)}

  ds = _examples(config, split, indices, None).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  size = config.image_size
  pad = {"image": tf.zeros([size, size, 3]), "label": tf.constant(-1), "mask": tf.constant(0.0)}
  ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
  return ds.take(num_batches * local_batch).batch(local_batch).prefetch(tf.data.AUTOTUNE)


def feature_batches(features: np.ndarray, labels: np.ndarray, global_batch: int, seed: int,
                    start_step: int) -> Iterator[dict]:
  """This process's part of endless shuffled global batches of cached features.

  Every process holds all features; epoch e's order is a permutation seeded by
  (seed, e), and each process takes its consecutive slice of every global batch.
  """
  n = len(features)
  steps_per_epoch = n // global_batch
  if steps_per_epoch == 0:
    raise ValueError(f"batch_size={global_batch} is larger than the {n} training examples.")
  local = global_batch // jax.process_count()
  lo = jax.process_index() * local
  step, perm, perm_epoch = start_step, None, -1
  while True:
    e, i = divmod(step, steps_per_epoch)
    if e != perm_epoch:
      perm, perm_epoch = np.random.default_rng([seed, e]).permutation(n), e
    rows = perm[i * global_batch + lo:i * global_batch + lo + local]
    yield {"features": features[rows], "label": labels[rows]}
    step += 1
