r"""Pictures: a config's augmented views, and a run's nearest-neighbour retrieval.

    python -m cvrl_jax.tools.visualize augmentations --config=configs/simclr_v2.py:cpu \
        --config.data_dir=../shared/tfds --out=docs/images/augmentations.png
    python -m cvrl_jax.tools.visualize retrieval --workdir=/tmp/simclr_cpu \
        --out=docs/images/retrieval.png

* ``augmentations``: one row per training image: the image, then views made by the
  training pipeline's own augmentation functions (``data.pipeline``) with the
  config's settings, cycling through its view policies (MoCo v3 / BYOL blur and
  solarize the two views differently), then multi-crop small crops if the config
  has them. A quick look at whether the augmentation is too weak or too strong.
* ``retrieval``: one row per test image (the query, framed grey): its ``k`` nearest
  training images by cosine similarity of the run's ``method.features`` (what the
  kNN monitor uses), framed green when their class is the query's, red when not,
  with the class name under each.

Images are upscaled by ``--scale`` (nearest neighbour: the pixels the network saw).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

from cvrl_jax import methods
from cvrl_jax.data import pipeline, sources
from cvrl_jax.evaluation import knn
from cvrl_jax.tools import export
from cvrl_jax.losses import l2_normalize

BORDER, GAP, CAPTION, HEADER = 3, 4, 13, 15
# A TFDS data dir prepared without cifar10's label file has numbers for names.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
QUERY, MATCH, MISMATCH, NONE = (128, 128, 128), (30, 170, 60), (215, 40, 40), (255, 255, 255)


def _font() -> ImageFont.ImageFont:
  return ImageFont.load_default(size=11)


def grid_size(rows: int, cols: int, tile: int, captions: bool) -> tuple[int, int]:
  """(width, height) in pixels of a ``grid`` of ``rows x cols`` square tiles."""
  cell_h = tile + 2 * BORDER + (CAPTION if captions else 0)
  return cols * (tile + 2 * BORDER + GAP) + GAP, HEADER + rows * (cell_h + GAP) + GAP


def grid(tiles: np.ndarray, headers: Sequence[str],
         borders: Optional[Sequence[Sequence[tuple]]] = None,
         captions: Optional[Sequence[Sequence[str]]] = None, scale: int = 2) -> Image.Image:
  """A picture of ``tiles`` ``[rows, cols, H, W, 3]`` (floats in [0, 1]).

  ``headers`` label the columns; ``borders`` (RGB per tile) frame the tiles and
  ``captions`` go under them.
  """
  rows, cols, h, w = tiles.shape[:4]
  if h != w:
    raise ValueError(f"Tiles must be square, got {h}x{w}.")
  tile = h * scale
  size = grid_size(rows, cols, tile, captions is not None)
  canvas = Image.new("RGB", size, (255, 255, 255))
  draw, font = ImageDraw.Draw(canvas), _font()
  step_x = tile + 2 * BORDER + GAP
  step_y = tile + 2 * BORDER + (CAPTION if captions is not None else 0) + GAP
  for c, text in enumerate(headers):
    draw.text((GAP + c * step_x + BORDER, 1), text, fill=(0, 0, 0), font=font)
  pixels = np.clip(np.round(np.asarray(tiles) * 255), 0, 255).astype(np.uint8)
  for r in range(rows):
    for c in range(cols):
      x, y = GAP + c * step_x, HEADER + GAP + r * step_y
      colour = borders[r][c] if borders is not None else NONE
      draw.rectangle([x, y, x + tile + 2 * BORDER - 1, y + tile + 2 * BORDER - 1], fill=colour)
      image = Image.fromarray(pixels[r, c]).resize((tile, tile), Image.Resampling.NEAREST)
      canvas.paste(image, (x + BORDER, y + BORDER))
      if captions is not None:
        text = captions[r][c]
        while text and draw.textlength(text, font=font) > tile + 2 * BORDER:
          text = text[:-1]
        draw.text((x, y + tile + 2 * BORDER), text, fill=(0, 0, 0), font=font)
  return canvas


def save_png(image: Image.Image, path: str) -> None:
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path, optimize=True)


# ---------------------------------------------------------------------------
# Augmentations
# ---------------------------------------------------------------------------


def first_images(config: ml_collections.ConfigDict, split: str, num: int
                 ) -> tuple[np.ndarray, np.ndarray]:
  """The first ``num`` images (uint8, 3 channels as training reads them) and labels
  of ``split``, undecorated."""
  rows = list(pipeline.as_numpy(sources.read(config, split, num)))
  return np.stack([r["image"] for r in rows]), np.array([r["label"] for r in rows])


def augmented_views(images: np.ndarray, config: ml_collections.ConfigDict, num_views: int,
                    seed: int = 0) -> tuple[np.ndarray, list[str]]:
  """``[N, 1 + num_views (+ small crops), S, S, 3]`` in [0, 1] and the column headers.

  Column 0 is the image resized to S; view ``j`` uses the config's view policy
  ``j % num_policies`` (the same functions as training, stateless seeds).
  """
  size = config.image_size
  policies = max(len(v) if isinstance(v, (tuple, list)) else 1
                 for v in (config.augment.blur_p, config.augment.solarize_p))
  fns = [pipeline.view_fn(config, j % policies) for j in range(num_views)]
  headers = ["image"] + [f"view {j + 1}" for j in range(num_views)]
  num_small = pipeline.num_small_crops(config)
  if num_small:
    fns += [pipeline.small_crop_fn(config)] * num_small
    headers += [f"small {j + 1}" for j in range(num_small)]
  out = []
  for i, image in enumerate(images):
    row = [tf.image.resize(tf.image.convert_image_dtype(image, tf.float32), [size, size])]
    for j, fn in enumerate(fns):
      view = fn(tf.constant(image), tf.constant([seed * 1_000_003 + i, j], tf.int64))
      row.append(tf.image.resize(view, [size, size], method="nearest"))
    out.append(tf.clip_by_value(tf.stack(row), 0.0, 1.0).numpy())
  return np.stack(out), headers


def augmentation_picture(config: ml_collections.ConfigDict, num_images: int = 6,
                         num_views: int = 8, scale: int = 2, seed: int = 0) -> Image.Image:
  images, _ = first_images(config, config.train_split, num_images)
  tiles, headers = augmented_views(images, config, num_views, seed)
  return grid(tiles, headers, scale=scale)


# ---------------------------------------------------------------------------
# Retrieval
# ---------------------------------------------------------------------------


def nearest(queries: np.ndarray, bank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Indices ``[q, k]`` of the most cosine-similar bank rows, most similar first, and
  their similarities."""
  sim = np.asarray(l2_normalize(queries) @ l2_normalize(bank).T)
  idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
  return idx, np.take_along_axis(sim, idx, axis=1)


def retrieval_tiles(query_images: np.ndarray, query_labels: np.ndarray,
                    neighbour_images: np.ndarray, neighbour_labels: np.ndarray,
                    names: Sequence[str]):
  """(tiles, headers, borders, captions) for ``grid``: query, then its neighbours."""
  q, k = neighbour_labels.shape
  tiles = np.concatenate([query_images[:, None], neighbour_images], axis=1)
  headers = ["query"] + [str(j + 1) for j in range(k)]
  borders = [[QUERY] + [MATCH if neighbour_labels[i, j] == query_labels[i] else MISMATCH
                        for j in range(k)] for i in range(q)]
  captions = [[names[query_labels[i]]] + [names[y] for y in neighbour_labels[i]]
              for i in range(q)]
  return tiles, headers, borders, captions


def class_names(config: ml_collections.ConfigDict) -> list[str]:
  """The dataset's class names (CIFAR-10's standard ones if its files lack them)."""
  names = sources.class_names(config)
  if config.dataset == "cifar10" and names == [str(i) for i in range(10)]:
    return list(CIFAR10_CLASSES)
  return names


def _features_fn(run: export.Run):
  """Jitted ``method.features`` of a restored run: the kNN monitor's representation."""
  probe = run.params.get("probe", {}).get("kernel")
  num_classes = probe.shape[-1] if probe is not None else 1
  method = methods.get_method(run.config, num_classes,
                              total_steps=run.config.total_steps or 1)
  params, batch_stats = jax.device_put((run.params, run.batch_stats))
  return jax.jit(lambda images: method.features(params, batch_stats, images))


def _dataset(config, split: str, num: Optional[int], batch: int):
  ds, _ = pipeline.eval_dataset(config, split, batch, num)
  return pipeline.as_numpy(ds)


def _images_at(config, split: str, num: Optional[int], batch: int,
               indices: np.ndarray) -> np.ndarray:
  """The eval-preprocessed images at ``indices`` (any shape) of ``split``'s first ``num``."""
  wanted, found, start = set(indices.ravel().tolist()), {}, 0
  for b in _dataset(config, split, num, batch):
    for i in wanted & set(range(start, start + len(b["image"]))):
      found[i] = b["image"][i - start]
    start += len(b["image"])
  return np.stack([found[i] for i in indices.ravel()]).reshape(*indices.shape,
                                                                *found[indices.flat[0]].shape)


def retrieval_picture(run: export.Run, num_queries: int = 6, k: int = 8,
                      bank_size: Optional[int] = None, query_pool: int = 1000,
                      batch: int = 500, scale: int = 2, seed: int = 0) -> Image.Image:
  """Queries drawn (``seed``) from the eval split's first ``query_pool`` images; the
  bank is the train split's first ``bank_size`` (default: the run's kNN bank)."""
  config = run.config
  bank_size = bank_size or config.knn.num_train_examples or None
  features = _features_fn(run)
  batch_fn = lambda b: (features(b["image"]), b["label"])
  bank, bank_labels = knn.extract(batch_fn, _dataset(config, config.train_split, bank_size,
                                                     batch))
  bank = bank[bank_labels >= 0]  # drop the padding of the last batch
  pool, pool_labels = knn.extract(batch_fn, _dataset(config, config.eval_split, query_pool,
                                                     batch))
  pool_size = int((pool_labels >= 0).sum())
  chosen = np.sort(np.random.default_rng(seed).choice(pool_size, num_queries, replace=False))
  idx, _ = nearest(pool[chosen], bank, k)
  tiles = retrieval_tiles(_images_at(config, config.eval_split, query_pool, batch, chosen),
                          pool_labels[chosen],
                          _images_at(config, config.train_split, bank_size, batch, idx),
                          bank_labels[idx], class_names(config))
  return grid(*tiles, scale=scale)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

COMMANDS = ("augmentations", "retrieval")


def main(argv: list[str]) -> None:
  from absl import flags, logging  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise SystemExit(f"Usage: python -m cvrl_jax.tools.visualize {{{'|'.join(COMMANDS)}}} "
                     "--out=FILE.png [--config=... | --workdir=...]")
  logging.set_verbosity(logging.WARNING)
  tf.config.set_visible_devices([], "GPU")
  try:
    if argv[1] == "augmentations":
      if f.config is None:
        raise ValueError("augmentations needs --config=configs/NAME.py[:VARIANT].")
      picture = augmentation_picture(f.config, f.num_images, f.num_views, f.scale, f.seed)
    else:
      if f.workdir is None:
        raise ValueError("retrieval needs --workdir=DIR of a pre-training run.")
      run = export.restore_run(f.workdir, f.step)
      if f.data_dir:
        run.config.data_dir = f.data_dir
      picture = retrieval_picture(run, f.num_images, f.k, f.bank_size, scale=f.scale,
                                  seed=f.seed)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"Picture refused: {e}") from None
  save_png(picture, f.out)
  print(f"Wrote {f.out} ({picture.size[0]}x{picture.size[1]} px).")


def _define_flags() -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  config_flags.DEFINE_config_file("config", None, "augmentations: the config whose "
                                  "augmentation to show, e.g. configs/simclr_v2.py:cpu.")
  flags.DEFINE_string("workdir", None, "retrieval: a pre-training run's workdir.")
  flags.DEFINE_integer("step", None, "retrieval: checkpoint step; default: the latest.")
  flags.DEFINE_string("data_dir", None, "retrieval: TFDS data dir, if not the run's own.")
  flags.DEFINE_string("out", None, "The PNG to write.")
  flags.DEFINE_integer("num_images", 6, "Rows: images (augmentations) or queries.")
  flags.DEFINE_integer("num_views", 8, "augmentations: views per image.")
  flags.DEFINE_integer("k", 8, "retrieval: neighbours per query.")
  flags.DEFINE_integer("bank_size", None, "retrieval: train images searched; default: "
                       "the run's kNN bank (config.knn.num_train_examples, else all).")
  flags.DEFINE_integer("scale", 2, "Pixels per image pixel.")
  flags.DEFINE_integer("seed", 0, "Which views / which queries.")
  flags.mark_flags_as_required(["out"])


if __name__ == "__main__":
  from absl import app  # pylint: disable=import-outside-toplevel
  _define_flags()
  app.run(main)
