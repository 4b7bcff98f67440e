r"""Writes scikit-learn's bundled handwritten digits as an image folder, for transfer.

    pip install scikit-learn
    python -m cvrl_jax.tools.digits_folder --out=/tmp/digits

The UCI optical-recognition digits that scikit-learn ships (``load_digits``:
1,797 real 8x8 grey-level scans of handwritten 0-9, 16 levels, by 43 writers),
scaled to 0-255, upsampled bilinearly to 32x32 RGB and written as PNGs to
``OUT/train/<digit>/`` and ``OUT/test/<digit>/``: a fixed, class-stratified 80/20
split (every 5th image of each class is a test image). Evaluate on it with
``--config.dataset=image_folder --config.data_dir=/tmp/digits``: a real dataset
whose domain differs from CIFAR-10's, available offline.
"""

import os

import numpy as np
import tensorflow as tf
from absl import app, flags



def write_digits(out: str, size: int = 32) -> dict[str, int]:
  """Writes the folder; returns the number of images per split."""
  from sklearn.datasets import load_digits  # only this tool needs scikit-learn
  digits = load_digits()
  images = digits.images.astype(np.float32) * (255.0 / 16.0)  # values 0..16
  counts = {"train": 0, "test": 0}
  seen = np.zeros(10, int)
  for i, (image, label) in enumerate(zip(images, digits.target)):
    split = "test" if seen[label] % 5 == 4 else "train"
    seen[label] += 1
    big = tf.image.resize(image[..., None], [size, size], method="bilinear")
    rgb = tf.cast(tf.clip_by_value(tf.round(tf.tile(big, [1, 1, 3])), 0, 255), tf.uint8)
    folder = os.path.join(out, split, str(label))
    tf.io.gfile.makedirs(folder)
    tf.io.write_file(os.path.join(folder, f"{i:04d}.png"), tf.io.encode_png(rgb))
    counts[split] += 1
  return counts


def main(argv):
  del argv
  counts = write_digits(flags.FLAGS.out, flags.FLAGS.size)
  print(f"Wrote {counts['train']} train and {counts['test']} test images to {flags.FLAGS.out}.")


if __name__ == "__main__":
  flags.DEFINE_string("out", None, "Folder to write train/ and test/ into.")
  flags.DEFINE_integer("size", 32, "Side of the written images, in pixels.")
  flags.mark_flag_as_required("out")
  app.run(main)
