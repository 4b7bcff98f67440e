"""Datasets by name: TFDS builders and image folders, their splits, decoded examples.

Nothing is ever downloaded: a dataset that is not prepared where the config
points fails at once with a message saying how to prepare it.
"""

import os
from typing import Optional

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

IMAGE_FOLDER = "image_folder"
ID_FEATURES = ("id", "file_name", "image/filename")  # how TFDS names an image, if it does


class DatasetNotFoundError(FileNotFoundError):
  """The dataset is not prepared where we looked, and we never download."""


def _data_dir(config: ml_collections.ConfigDict) -> Optional[str]:
  return config.data_dir or os.environ.get("TFDS_DATA_DIR")


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


def num_examples(config: ml_collections.ConfigDict, split: str) -> int:
  """Examples in ``split`` of ``config.dataset``, or an error listing its splits."""
  splits = get_builder(config).info.splits
  if split not in splits:
    raise ValueError(f"{config.dataset} has no split {split!r}; its splits are "
                     f"{sorted(splits.keys())}. Set --config.train_split / --config.eval_split.")
  return splits[split].num_examples


def num_classes(config: ml_collections.ConfigDict) -> int:
  return get_builder(config).info.features["label"].num_classes


def class_names(config: ml_collections.ConfigDict) -> list[str]:
  return list(get_builder(config).info.features["label"].names)


def read(config: ml_collections.ConfigDict, split: str, num: Optional[int] = None
         ) -> tf.data.Dataset:
  """Decoded {image uint8, label} of this process's part of ``split`` (its first
  ``num`` examples if given), in the split's order."""
  builder = get_builder(config)
  if isinstance(builder, tfds.ImageFolder):  # no sub-split API: take and shard
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.take(num) if num else ds
    ds = ds.shard(jax.process_count(), jax.process_index())
  else:
    split = f"{split}[:{num}]" if num else split
    split = tfds.split_for_jax_process(split, drop_remainder=False)
    ds = builder.as_dataset(split=split, shuffle_files=False)
  return ds.map(lambda x: {"image": x["image"], "label": x["label"]},
                num_parallel_calls=tf.data.AUTOTUNE)


def read_indexed(config: ml_collections.ConfigDict, split: str,
                 indices: Optional[np.ndarray], labelled: Optional[np.ndarray]
                 ) -> tf.data.Dataset:
  """This process's share of {image, label, labelled} of ``split`` restricted to
  ``indices`` (positions in the whole split; all if None); ``labelled`` marks the
  examples whose label may be used (all if None)."""
  builder = get_builder(config)
  total = num_examples(config, split)
  ds = builder.as_dataset(split=split, shuffle_files=False).enumerate()
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


def read_labels(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, list[str]]:
  """Labels of every example of ``split`` in order, and their ids ('' if none); no
  image is decoded."""
  builder = get_builder(config)
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
