"""Datasets by name: TFDS builders and image folders, their splits, decoded examples.

Nothing is ever downloaded: a dataset that is not prepared where the config
points fails at once with a message saying how to prepare it.

Every image leaves this module as uint8 ``[H, W, 3]``, whatever its file holds:
grayscale (MNIST) is repeated to three equal channels and an alpha channel is
dropped (``as_rgb``; image folders decode with ``channels=3``, the same rule, so a
folder that mixes grayscale, RGB and RGBA files is read as one RGB dataset). Three
channels rather than a 1-channel model: every encoder, the torchvision export
and encoders pre-trained on RGB data then work on grayscale data unchanged, at the
cost of the first convolution's three identical inputs.
"""

import functools
import os
import random
from typing import Optional

import jax
import ml_collections
from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

IMAGE_FOLDER = "image_folder"
ID_FEATURES = ("id", "file_name", "image/filename")  # how TFDS names an image, if it does
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # the files tfds.ImageFolder lists
_HEADERS = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
_ENDS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}  # end-of-image marker / last chunk
_TAIL_BYTES = 1024  # where the end marker must be (JPEGs may carry a few trailing bytes)


class DatasetNotFoundError(FileNotFoundError):
  """The dataset is not prepared where we looked, and we never download."""


def _data_dir(config: ml_collections.ConfigDict) -> Optional[str]:
  return config.data_dir or os.environ.get("TFDS_DATA_DIR")


def _how_to_get(name: str, data_dir: Optional[str]) -> str:
  where = data_dir or "~/tensorflow_datasets (the TFDS default)"
  build = name.split("/")[0]
  if build.startswith("imagenet2012"):  # imagenet2012, imagenet2012_subset: by hand
    steps = (
        "ImageNet cannot be downloaded by TFDS. To prepare it once:\n"
        "  1. register at https://image-net.org/download-images and download "
        "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into a folder MANUAL;\n"
        f"  2. run  tfds build {build} --data_dir=DIR --manual_dir=MANUAL\n"
        "     (https://www.tensorflow.org/datasets/catalog/imagenet2012);\n"
        "  3. point the run at it with --config.data_dir=DIR or TFDS_DATA_DIR=DIR.\n"
        "To try the code without ImageNet, pick a small variant, e.g. "
        "--config=configs/simclr_v2.py:cpu (CIFAR-10) or :mnist, with "
        "--config.data_dir=../shared/tfds.")
  else:
    steps = ("To fix it: on a machine with internet access run\n"
             f"    tfds build {build} --data_dir=DIR\n"
             "then point the run at it with --config.data_dir=DIR or TFDS_DATA_DIR=DIR.")
  return (f"Dataset '{name}' is not prepared in {where}, and this run never downloads.\n"
          f"{steps} For your own images use --config.dataset=image_folder "
          "--config.data_dir=ROOT with ROOT/<split>/<class>/<image>.")


def _image_folder_root(config: ml_collections.ConfigDict) -> str:
  """``data_dir`` of an image folder run, or a clear error when it is no folder."""
  data_dir = _data_dir(config)
  if not data_dir or not tf.io.gfile.isdir(data_dir):
    raise DatasetNotFoundError(
        f"dataset=image_folder needs --config.data_dir=ROOT with images in "
        f"ROOT/<split>/<class>/*.jpg; got data_dir={data_dir!r}.")
  return data_dir


def as_rgb(image: tf.Tensor) -> tf.Tensor:
  """``image`` [H, W, C] as [H, W, 3]: grayscale (C = 1, or 2 with alpha) repeated to
  three channels, RGB(A) without alpha; the rule of ``tf.io.decode_image(channels=3)``."""
  gray = lambda: tf.image.grayscale_to_rgb(image[..., :1])
  rgb = lambda: image[..., :3]
  channels = image.shape[-1]
  if channels is None:  # known per image only
    return tf.cond(tf.shape(image)[-1] < 3, gray, rgb)
  if channels not in (1, 2, 3, 4):
    raise ValueError(f"Images with {channels} channels: cvrl_jax reads grayscale (1), "
                     f"grayscale + alpha (2), RGB (3) or RGBA (4) images.")
  return gray() if channels < 3 else rgb()


def get_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder for ``config.dataset``, or a clear error if it is missing."""
  name, data_dir = config.dataset, _data_dir(config)
  if name == IMAGE_FOLDER:
    return tfds.ImageFolder(_image_folder_root(config))
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
  if config.dataset == IMAGE_FOLDER:
    return len(image_folder_files(config, split)[0])
  splits = get_builder(config).info.splits
  if split not in splits:
    raise ValueError(f"{config.dataset} has no split {split!r}; its splits are "
                     f"{sorted(splits.keys())}. Set --config.train_split / --config.eval_split.")
  return splits[split].num_examples


def num_classes(config: ml_collections.ConfigDict) -> int:
  return get_builder(config).info.features["label"].num_classes


def class_names(config: ml_collections.ConfigDict) -> list[str]:
  return list(get_builder(config).info.features["label"].names)


def read(config: ml_collections.ConfigDict, split: str, num: Optional[int] = None,
         with_index: bool = False) -> tf.data.Dataset:
  """Decoded {image uint8 [H, W, 3], label} of this process's part of ``split`` (its first
  ``num`` examples if given), in the split's order.

  ``with_index``: also "index" (int64), the example's position in the whole (or first
  ``num`` of the) split as the processes read it together: unique, in [0, N), the same
  every epoch and every restart with the same number of processes (InstDisc's bank row).
  """
  builder = get_builder(config)
  if config.dataset == IMAGE_FOLDER:  # no sub-split API: take and shard
    ds = image_folder(config, split)
    ds = ds.take(num) if num else ds
    ds = _with_position(ds, 0) if with_index else ds  # before the shard: process p has p, p + P, ...
    ds = ds.shard(jax.process_count(), jax.process_index())
  else:
    split = f"{split}[:{num}]" if num else split
    ds = builder.as_dataset(split=tfds.split_for_jax_process(split, drop_remainder=False),
                            shuffle_files=False)
    ds = _with_position(ds, _first_position(builder, split)) if with_index else ds
  keys = ("label", "index") if with_index else ("label",)
  return ds.map(lambda x: {"image": as_rgb(x["image"]), **{k: x[k] for k in keys}},
                num_parallel_calls=tf.data.AUTOTUNE)


def _with_position(ds: tf.data.Dataset, first: int) -> tf.data.Dataset:
  """``ds`` with "index": ``first`` + each example's position in it."""
  return ds.enumerate(first).map(lambda i, x: {**x, "index": i})


def _first_position(builder: tfds.core.DatasetBuilder, split: str) -> int:
  """Examples of ``split`` that the processes before this one read:
  ``tfds.split_for_jax_process`` hands the processes consecutive parts, in order."""
  return sum(builder.info.splits[tfds.split_for_jax_process(
      split, process_index=p, drop_remainder=False)].num_examples
             for p in range(jax.process_index()))


def read_indexed(config: ml_collections.ConfigDict, split: str,
                 indices: Optional[np.ndarray], labelled: Optional[np.ndarray]
                 ) -> tf.data.Dataset:
  """This process's share of {image, label, labelled} of ``split`` restricted to
  ``indices`` (positions in the whole split; all if None); ``labelled`` marks the
  examples whose label may be used (all if None)."""
  total = num_examples(config, split)
  ds = (image_folder(config, split) if config.dataset == IMAGE_FOLDER else
        get_builder(config).as_dataset(split=split, shuffle_files=False)).enumerate()
  if indices is not None:
    keep = np.zeros(total, bool)
    keep[indices] = True
    keep = tf.constant(keep)
    ds = ds.filter(lambda i, x: tf.gather(keep, i))
  mark = tf.constant(np.ones(total, np.float32) if labelled is None
                     else np.isin(np.arange(total), labelled).astype(np.float32))
  ds = ds.map(lambda i, x: {"image": as_rgb(x["image"]), "label": tf.cast(x["label"], tf.int32),
                            "labelled": tf.gather(mark, i)},
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.shard(jax.process_count(), jax.process_index())


def read_labels(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, list[str]]:
  """Labels of every example of ``split`` in order, and their ids ('' if none); no
  image is decoded."""
  if config.dataset == IMAGE_FOLDER:
    paths, labels = image_folder_files(config, split)
    return labels.astype(np.int64), list(paths)
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


def image_problem(path: str) -> Optional[str]:
  """Why the file at ``path`` is not a whole JPEG or PNG, judged from its first and
  last bytes (no decoding); None when it looks whole."""
  with tf.io.gfile.GFile(path, "rb") as f:
    size = f.size()
    if size == 0:
      return "an empty file"
    head = f.read(8)
    f.seek(max(size - _TAIL_BYTES, 0))
    tail = f.read()
  kind = next((k for magic, k in _HEADERS.items() if head.startswith(magic)), None)
  if kind is None:
    return "not a JPEG or PNG image (its first bytes are neither header)"
  if _ENDS[kind] not in tail:
    return f"a truncated {kind} (no end marker in its last {_TAIL_BYTES} bytes)"
  return None


def _listed(root: str, split: str) -> tuple[list[str], list[str], list[str]]:
  """(paths, their class names, every class name) of ``root/split``, in
  tfds.ImageFolder's order: sorted, then shuffled with the split's name as seed."""
  def folders(d):
    return sorted(f for f in tf.io.gfile.listdir(d) if tf.io.gfile.isdir(os.path.join(d, f)))
  classes = sorted({c.rstrip("/") for s in folders(root) for c in folders(os.path.join(root, s))})
  split_dir = os.path.join(root, split)
  examples = [(os.path.join(split_dir, c, f), c) for c in folders(split_dir)
              for f in sorted(tf.io.gfile.listdir(os.path.join(split_dir, c)))
              if f.lower().endswith(IMAGE_EXTENSIONS)]
  random.Random(split).shuffle(examples)
  return [p for p, _ in examples], [c for _, c in examples], classes


@functools.lru_cache(maxsize=None)
def _checked_files(root: str, split: str, skip_bad: bool
                   ) -> tuple[tuple[str, ...], np.ndarray, tuple[tuple[str, str], ...]]:
  paths, names, classes = _listed(root, split)
  bad = [(p, why) for p in paths if (why := image_problem(p))]
  if bad and not skip_bad:
    shown = "\n".join(f"    {p}: {why}" for p, why in bad[:10])
    more = f"\n    ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    raise ValueError(
        f"{len(bad)} of the {len(paths)} files in {os.path.join(root, split)} are not "
        f"whole images:\n{shown}{more}\nRemove or replace them, or run with "
        f"--config.skip_bad_images=True to leave them out (counted in the log and in "
        f"metrics.jsonl as bad_images_skipped).")
  for path, why in bad:  # once per process: the result is cached
    logging.warning("Skipping %s: %s (skip_bad_images=True).", path, why)
  dropped = {p for p, _ in bad}
  kept = [(p, classes.index(c)) for p, c in zip(paths, names) if p not in dropped]
  return (tuple(p for p, _ in kept), np.asarray([y for _, y in kept], np.int64),
          tuple(bad))


def image_folder_files(config: ml_collections.ConfigDict, split: str
                       ) -> tuple[tuple[str, ...], np.ndarray]:
  """The image paths of ``data_dir/split`` and their labels, after the check of
  every file (``image_problem``): a file that is not a whole image stops the run
  with its name, or with ``skip_bad_images`` is left out and logged."""
  paths, labels, _ = _checked_files(_image_folder_root(config), split,
                                    config.skip_bad_images)
  return paths, labels


def bad_images_skipped(config: ml_collections.ConfigDict, splits: tuple[str, ...]) -> int:
  """How many files of ``splits`` an image-folder run leaves out (0 for TFDS)."""
  if config.dataset != IMAGE_FOLDER or not config.skip_bad_images:
    return 0
  root = _data_dir(config)
  return sum(len(_checked_files(root, s, True)[2]) for s in splits
             if tf.io.gfile.isdir(os.path.join(root, s)))


def image_folder(config: ml_collections.ConfigDict, split: str) -> tf.data.Dataset:
  """{image uint8 [H, W, 3], label} of an image folder's split, in tfds.ImageFolder's
  order, every file checked first (``image_folder_files``)."""
  paths, labels = image_folder_files(config, split)

  def decode(path, label):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return {"image": image, "label": label}

  ds = tf.data.Dataset.from_tensor_slices((list(paths), labels))
  return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
