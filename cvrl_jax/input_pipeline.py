"""tf.data input: TFDS datasets by name, per-process shards, augmented views.

The training stream is a pure function of (seed, step): epoch e is shuffled with a
seed derived from (seed, e), and every example's augmentation uses stateless ops
seeded from (seed, process, e, position). A resumed run therefore rebuilds the
stream at ``start_step`` and sees exactly the batches an uninterrupted run sees.

Multi-crop (SwAV, DINO; any method may read it): ``config.multicrop.num_small``
small crops of ``multicrop.size`` pixels per image besides the views, under
``"small_views"``. Their seeds come from a separate derivation of the example's
seed, so turning multi-crop on leaves the views bit-identical.
"""

import os
from typing import Any, Iterator, Optional

import jax
import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from cvrl_jax import augment, device_augment
from cvrl_jax import config as config_lib

IMAGE_FOLDER = "image_folder"


class DatasetNotFoundError(FileNotFoundError):
  """The dataset is not prepared where we looked, and we never download."""


def _data_dir(config: ml_collections.ConfigDict) -> Optional[str]:
  return config.get("data_dir") or os.environ.get("TFDS_DATA_DIR")


def _how_to_get(name: str, data_dir: Optional[str]) -> str:
  where = data_dir or "~/tensorflow_datasets (the TFDS default)"
  return (
      f"Dataset '{name}' is not prepared in {where}, and this run never downloads.\n"
      f"To fix it: on a machine with internet access run\n"
      f"    tfds build {name.split('/')[0]} --data_dir=DIR\n"
      f"(ImageNet needs its archives placed by hand in DIR/downloads/manual first: "
      f"see https://www.tensorflow.org/datasets/catalog/imagenet2012), then point "
      f"the run at it with --config.data_dir=DIR or TFDS_DATA_DIR=DIR. For your own "
      f"images use --config.dataset=image_folder --config.data_dir=ROOT with "
      f"ROOT/<split>/<class>/<image>.")


def get_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder for ``config.dataset``, or a clear error if it is missing."""
  name, data_dir = config.dataset, _data_dir(config)
  if name == IMAGE_FOLDER:
    if not data_dir or not tf.io.gfile.isdir(data_dir):
      raise DatasetNotFoundError(
          f"dataset=image_folder needs --config.data_dir=ROOT with images in "
          f"ROOT/<split>/<class>/*.jpg; got data_dir={data_dir!r}.")
    return tfds.ImageFolder(data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetNotFoundError(
        f"'{name}' is not a TFDS dataset name ({e.__class__.__name__}). See "
        "https://www.tensorflow.org/datasets/catalog for names.") from e
  if not tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json")):
    raise DatasetNotFoundError(_how_to_get(name, data_dir))
  return builder


def num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  return builder.info.splits[split].num_examples


def _read(builder: tfds.core.DatasetBuilder, split: str, *, per_process: bool,
          num: Optional[int] = None) -> tf.data.Dataset:
  """Decoded (image uint8, label) pairs of this process's part of ``split``."""
  if isinstance(builder, tfds.ImageFolder):  # no sub-split API: take and shard
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.take(num) if num else ds
    if per_process:
      ds = ds.shard(jax.process_count(), jax.process_index())
  else:
    split = f"{split}[:{num}]" if num else split
    if per_process:
      split = tfds.split_for_jax_process(split, drop_remainder=False)
    ds = builder.as_dataset(split=split, shuffle_files=False)
  return ds.map(lambda x: {"image": x["image"], "label": x["label"]},
                num_parallel_calls=tf.data.AUTOTUNE)


def _to_float(image: tf.Tensor) -> tf.Tensor:
  return tf.image.convert_image_dtype(image, tf.float32)


def _crop_fn(config: ml_collections.ConfigDict, size: int, crop_area, blur_p, solarize_p):
  """One augmented crop: ``config.augment``'s colour recipe at this size and area."""
  aug = config.augment

  def fn(image, seed):
    return augment.simclr_view(
        _to_float(image), seed, size=size,
        crop_area=tuple(crop_area), color_strength=aug.color_strength,
        color_jitter_strengths=aug.get("color_jitter_strengths"),
        color_p=aug.get("color_p", 0.8), grayscale_p=aug.grayscale_p, blur_p=blur_p,
        solarize_p=solarize_p)
  return fn


def _view_fn(config: ml_collections.ConfigDict, view: int):
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
                               color_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
    return tf.cast(tf.round(view * 255.0), tf.uint8)
  return fn


def num_small_crops(config: ml_collections.ConfigDict) -> int:
  """How many multi-crop small crops each example gets (0: multi-crop off)."""
  return config.multicrop.num_small if "multicrop" in config else 0


def _small_crop_fn(config: ml_collections.ConfigDict):
  """A multi-crop small crop: ``multicrop.size`` px of ``multicrop.crop_area``."""
  mc = config.multicrop
  return _crop_fn(config, mc.size, mc.crop_area, mc.blur_p, mc.get("solarize_p", 0.0))


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


def train_dataset(config: ml_collections.ConfigDict, local_batch: int,
                  start_step: int = 0) -> tf.data.Dataset:
  """Batches of ``num_views`` augmented views of the train split, from ``start_step``.

  Yields {"views": (view_0, view_1, ...) each [local_batch, S, S, 3] float32,
  "label": [local_batch] int32}, plus with multi-crop "small_views": a tuple of
  ``multicrop.num_small`` arrays [local_batch, s, s, 3]. Labels feed only the
  online linear monitor. With ``augment.on_device`` the views are cropped and
  flipped only, uint8, and "aug_seed" [local_batch, 2] uint32 keys the rest of
  their augmentation in the step (``device_augment``).
  """
  builder = get_builder(config)
  ds = _read(builder, config.train_split, per_process=True,
             num=config.get("num_train_examples"))
  n = int(ds.cardinality())
  if n < local_batch:
    raise ValueError(f"{config.dataset}:{config.train_split} has {n} examples on "
                     f"this process, fewer than one batch of {local_batch}.")
  if config.get("cache", True):
    ds = ds.cache()  # decoded uint8: 150 MB for CIFAR-10; off for ImageNet.
  seed = config.seed
  first_epoch, offset = divmod(start_step * local_batch, n)
  process = jax.process_index()
  on_device = device_augment.enabled(config)
  num_views = config.get("num_views", 2)
  views = ([_crop_only_fn(config)] * num_views if on_device
           else [_view_fn(config, v) for v in range(num_views)])
  num_small, small_crop = num_small_crops(config), None
  if num_small:
    small_crop = _small_crop_fn(config)

  def epoch(e):
    shuffled = ds.shuffle(min(n, config.get("shuffle_buffer", 50_000)),
                          seed=seed * 100_003 + e, reshuffle_each_iteration=False)
    shuffled = shuffled.enumerate().map(
        lambda i, x: (e * n + i, x), num_parallel_calls=tf.data.AUTOTUNE)
    return shuffled.skip(tf.where(e == first_epoch, tf.constant(offset, tf.int64), 0))

  def augment_example(counter, x):
    base = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, process], tf.int64), counter)
    seeds = tf.random.experimental.stateless_split(base, len(views))
    out = {"views": tuple(v(x["image"], seeds[i]) for i, v in enumerate(views)),
           "label": tf.cast(x["label"], tf.int32)}
    if on_device:
      out["aug_seed"] = _device_seed(base)
    if num_small:
      small = tf.random.experimental.stateless_split(
          tf.random.experimental.stateless_fold_in(base, _SMALL_CROPS_STREAM), num_small)
      out["small_views"] = tuple(small_crop(x["image"], small[i]) for i in range(num_small))
    return out

  stream = tf.data.Dataset.range(first_epoch, 1 << 62).flat_map(epoch)
  stream = stream.map(augment_example, num_parallel_calls=tf.data.AUTOTUNE)
  stream = stream.batch(local_batch, drop_remainder=True)
  return stream.prefetch(tf.data.AUTOTUNE)


def eval_dataset(config: ml_collections.ConfigDict, split: str, local_batch: int,
                 num: Optional[int] = None) -> tuple[tf.data.Dataset, int]:
  """Centre-cropped, unaugmented batches of ``split``, padded to whole batches.

  Every process yields the same number of batches (padding rows have mask 0), so
  collective evaluation steps never wait on a process that ran out of data.
  Returns the dataset and the number of batches.
  """
  builder = get_builder(config)
  total = num or num_examples(builder, split)
  ds = _read(builder, split, per_process=True, num=num)
  per_process = -(-total // jax.process_count())
  num_batches = -(-per_process // local_batch)
  crop = config.get("eval_crop_proportion", 1.0)

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


def as_numpy(ds: tf.data.Dataset) -> Iterator[Any]:
  return iter(tfds.as_numpy(ds))


def num_classes(config: ml_collections.ConfigDict) -> int:
  return get_builder(config).info.features["label"].num_classes
