"""tf.data streams of every run: augmented views, labelled crops, padded eval passes.

* ``train_dataset``: pre-training batches of ``num_views`` augmented views (and
  multi-crop small crops) of the train split.
* ``labelled_dataset``: evaluation training batches (linear eval, fine-tuning,
  distillation): crop + flip or centre crop, a label mask, optionally a subset.
* ``eval_dataset``: one centre-cropped pass over a split (or a subset of it),
  padded to whole batches that are equally many on every process.
* ``feature_batches``: shuffled global batches of precomputed features.

The training streams are pure functions of (seed, step): epoch e is shuffled with
a seed derived from (seed, e), and every example's augmentation uses stateless
ops seeded from (seed, process, e, position). A resumed run therefore rebuilds
the stream at ``start_step`` and sees exactly the batches an uninterrupted run sees.

Multi-crop (SwAV, DINO; any method may read it): ``config.multicrop.num_small``
small crops of ``multicrop.size`` pixels per image besides the views, under
``"small_views"``. Their seeds come from a separate derivation of the example's
seed, so turning multi-crop on leaves the views bit-identical.
"""

from typing import Any, Iterator, Optional

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cvrl_jax import config as config_lib
from cvrl_jax.data import augment, device_augment, sources


def _to_float(image: tf.Tensor) -> tf.Tensor:
  return tf.image.convert_image_dtype(image, tf.float32)


def _crop_fn(config: ml_collections.ConfigDict, size: int, crop_area, blur_p, solarize_p):
  """One augmented crop: ``config.augment``'s colour recipe at this size and area."""
  aug = config.augment

  def fn(image, seed):
    return augment.simclr_view(
        _to_float(image), seed, size=size,
        crop_area=tuple(crop_area), flip=aug.flip, color_strength=aug.color_strength,
        color_jitter_strengths=aug.color_jitter_strengths,
        color_p=aug.color_p, grayscale_p=aug.grayscale_p, blur_p=blur_p,
        solarize_p=solarize_p, rotate_p=aug.rotate_p, cutout_p=aug.cutout_p,
        noise_p=aug.noise_p, sobel_p=aug.sobel_p)
  return fn


def view_fn(config: ml_collections.ConfigDict, view: int):
  """The augmentation of view ``view`` (0 or 1): views may differ (BYOL, MoCo v3)."""
  aug = config.augment
  return _crop_fn(config, config.image_size, aug.crop_area,
                  config_lib.view_setting(config, "blur_p", view),
                  config_lib.view_setting(config, "solarize_p", view))


def _crop_only_fn(config: ml_collections.ConfigDict):
  """``augment.on_device``'s host part: crop and flip only (the views' own seeds, so the
  same crops as the host path), as uint8; the colour stages run in the step."""
  size, crop_area = config.image_size, tuple(config.augment.crop_area)

  def fn(image, seed):
    view = augment.simclr_view(_to_float(image), seed, size=size, crop_area=crop_area,
                               flip=config.augment.flip, color_p=0.0, grayscale_p=0.0,
                               blur_p=0.0, solarize_p=0.0)
    return tf.cast(tf.round(view * 255.0), tf.uint8)
  return fn


def num_small_crops(config: ml_collections.ConfigDict) -> int:
  """How many multi-crop small crops each example gets (0: multi-crop off)."""
  return config.multicrop.num_small


def small_crop_fn(config: ml_collections.ConfigDict):
  """A multi-crop small crop: ``multicrop.size`` px of ``multicrop.crop_area``."""
  mc = config.multicrop
  return _crop_fn(config, mc.size, mc.crop_area, mc.blur_p, mc.solarize_p)


# Folded into an example's seed for its small crops: a derivation of its own, so
# the views' seeds (and the views) do not depend on whether multi-crop is on.
_SMALL_CROPS_STREAM = 1
# Likewise for the device augmentation's per-example key (``aug_seed``).
_DEVICE_AUG_STREAM = 2


def _device_seed(base: tf.Tensor) -> tf.Tensor:
  """uint32[2] key data for ``device_augment``, a function of the example's seed."""
  return tf.random.stateless_uniform(
      [2], tf.random.experimental.stateless_fold_in(base, _DEVICE_AUG_STREAM),
      minval=None, maxval=None, dtype=tf.uint32)


def _epochs(ds: tf.data.Dataset, n: int, seed: int, buffer: int, local_batch: int,
            start_step: int) -> tf.data.Dataset:
  """Endless (counter, example) of ``ds`` (``n`` examples), from ``start_step`` on.

  Epoch e is ``ds`` shuffled with seed (seed, e); ``counter = e * n + position``
  numbers every example ever drawn, which seeds its augmentation.
  """
  first_epoch, offset = divmod(start_step * local_batch, n)

  def epoch(e):
    shuffled = ds.shuffle(buffer, seed=seed * 100_003 + e, reshuffle_each_iteration=False)
    shuffled = shuffled.enumerate().map(
        lambda i, x: (e * n + i, x), num_parallel_calls=tf.data.AUTOTUNE)
    return shuffled.skip(tf.where(e == first_epoch, tf.constant(offset, tf.int64), 0))

  return tf.data.Dataset.range(first_epoch, 1 << 62).flat_map(epoch)


def _example_seed(seed: int, counter: tf.Tensor) -> tf.Tensor:
  """The stateless seed of the example numbered ``counter`` on this process."""
  return tf.random.experimental.stateless_fold_in(
      tf.constant([seed, jax.process_index()], tf.int64), counter)


def _batched(stream: tf.data.Dataset, local_batch: int) -> tf.data.Dataset:
  return stream.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def train_dataset(config: ml_collections.ConfigDict, local_batch: int,
                  start_step: int = 0) -> tf.data.Dataset:
  """Batches of ``num_views`` augmented views of the train split, from ``start_step``.

  Yields {"views": (view_0, view_1, ...) each [local_batch, S, S, 3] float32,
  "label": [local_batch] int32}, plus with multi-crop "small_views": a tuple of
  ``multicrop.num_small`` arrays [local_batch, s, s, 3]. Labels feed only the
  online linear monitor. With ``augment.on_device`` the views are cropped and
  flipped only, uint8, and "aug_seed" [local_batch, 2] uint32 keys the rest of
  their augmentation in the step (``device_augment``). With ``example_index`` (InstDisc's
  memory bank), "index" [local_batch] int32: each example's position in the split
  (``sources.read``).
  """
  ds = sources.read(config, config.train_split, config.num_train_examples or None,
                    with_index=config.example_index)
  n = int(ds.cardinality())
  if n < local_batch:
    raise ValueError(f"{config.dataset}:{config.train_split} has {n} examples on "
                     f"this process, fewer than one batch of {local_batch}.")
  if config.cache:
    ds = ds.cache()  # decoded uint8: 150 MB for CIFAR-10; off for ImageNet.
  on_device = device_augment.enabled(config)
  num_views = config.num_views
  views = ([_crop_only_fn(config)] * num_views if on_device
           else [view_fn(config, v) for v in range(num_views)])
  num_small, small_crop = num_small_crops(config), None
  if num_small:
    small_crop = small_crop_fn(config)

  def augment_example(counter, x):
    base = _example_seed(config.seed, counter)
    seeds = tf.random.experimental.stateless_split(base, len(views))
    out = {"views": tuple(v(x["image"], seeds[i]) for i, v in enumerate(views)),
           "label": tf.cast(x["label"], tf.int32)}
    if config.example_index:
      out["index"] = tf.cast(x["index"], tf.int32)
    if on_device:
      out["aug_seed"] = _device_seed(base)
    if num_small:
      small = tf.random.experimental.stateless_split(
          tf.random.experimental.stateless_fold_in(base, _SMALL_CROPS_STREAM), num_small)
      out["small_views"] = tuple(small_crop(x["image"], small[i]) for i in range(num_small))
    return out

  buffer = min(n, config.shuffle_buffer)
  stream = _epochs(ds, n, config.seed, buffer, local_batch, start_step)
  return _batched(stream.map(augment_example, num_parallel_calls=tf.data.AUTOTUNE),
                  local_batch)


def _crop_flip(config: ml_collections.ConfigDict, image: tf.Tensor, seed) -> tf.Tensor:
  """An evaluation's training crop: ``train_augment`` 'crop_flip' (the papers') or
  'none' (the eval centre crop)."""
  image = _to_float(image)
  if config.train_augment == "none":
    return augment.center_crop(image, size=config.image_size,
                               crop_proportion=config.eval_crop_proportion)
  if config.train_augment != "crop_flip":
    raise ValueError(f"train_augment={config.train_augment!r}: use 'crop_flip' or 'none'.")
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  image = augment.random_resized_crop(image, crop_seed, size=config.image_size,
                                      area_range=tuple(config.crop_area))
  return augment.random_flip(image, flip_seed)


def _ceil_div(a: int, b: int) -> int:
  return -(-a // b)


def _local_count(total: int) -> int:
  """Examples this process holds after ``shard`` of ``total``."""
  return len(range(jax.process_index(), total, jax.process_count()))


def labelled_dataset(config: ml_collections.ConfigDict, local_batch: int, start_step: int,
                     indices: Optional[np.ndarray], labelled: Optional[np.ndarray] = None
                     ) -> tf.data.Dataset:
  """Endless batches {image, label, labelled} of the train split, from ``start_step``:
  the examples at ``indices`` (all if None), ``labelled`` marking those whose label
  may be used (all if None). Shuffled and seeded as ``train_dataset``."""
  total = (len(indices) if indices is not None
           else sources.num_examples(config, config.train_split))
  n = _local_count(total)
  if n < local_batch:
    raise ValueError(f"{n} training examples on this process are fewer than one batch "
                     f"of {local_batch}: lower --config.batch_size.")
  ds = sources.read_indexed(config, config.train_split, indices, labelled).cache()

  def prepare(counter, x):
    return {**x, "image": _crop_flip(config, x["image"], _example_seed(config.seed, counter))}

  stream = _epochs(ds, n, config.seed, n, local_batch, start_step)
  return _batched(stream.map(prepare, num_parallel_calls=tf.data.AUTOTUNE), local_batch)


def eval_dataset(config: ml_collections.ConfigDict, split: str, local_batch: int,
                 num: Optional[int] = None, indices: Optional[np.ndarray] = None
                 ) -> tuple[tf.data.Dataset, int]:
  """Centre-cropped, unaugmented batches of ``split`` (its first ``num`` examples,
  or those at ``indices``), padded to whole batches.

  Every process yields the same number of batches (padding rows have mask 0 and
  label -1), so collective evaluation steps never wait on a process that ran out
  of data. Returns the dataset and the number of batches.
  """
  if indices is None:
    total = num or sources.num_examples(config, split)
    ds = sources.read(config, split, num)
  else:
    total, ds = len(indices), sources.read_indexed(config, split, indices, None)
  num_batches = _ceil_div(_ceil_div(total, jax.process_count()), local_batch)
  crop = config.eval_crop_proportion

  def prepare(x):
    image = augment.center_crop(_to_float(x["image"]), size=config.image_size,
                                crop_proportion=crop)
    return {"image": image, "label": tf.cast(x["label"], tf.int32),
            "mask": tf.constant(1.0)}

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  pad = {"image": tf.zeros([config.image_size, config.image_size, 3]),
         "label": tf.constant(-1), "mask": tf.constant(0.0)}
  ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
  ds = ds.take(num_batches * local_batch).batch(local_batch)
  return ds.prefetch(tf.data.AUTOTUNE), num_batches


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


def as_numpy(ds: tf.data.Dataset) -> Iterator[Any]:
  return iter(tfds.as_numpy(ds))
