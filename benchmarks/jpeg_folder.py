r"""An ImageNet-sized JPEG image folder, for timing the 224 px input pipeline offline.

    python -m benchmarks.jpeg_folder --data_dir=../shared/tfds --out=/tmp/jpeg_folder
    python -m benchmarks.throughput --config=configs/simclr_v2.py --steps=0 \
        --config.dataset=image_folder --config.data_dir=/tmp/jpeg_folder \
        --config.batch_size=64 --input_batches=10

ImageNet is not on this machine, and a pipeline that decodes 32 px CIFAR images
says little about one that decodes ~110 KB JPEGs of about 500 x 375 px. This
writes CIFAR-10 train images upscaled to 500 x 375 with per-pixel noise, which
makes their JPEGs (quality 90) about as large as ImageNet's, in the layout
``--config.dataset=image_folder`` reads: ``OUT/train/<class>/<n>.jpg``.
"""

import os

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags
from PIL import Image

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "TFDS data dir holding cifar10.", required=True)
flags.DEFINE_string("out", None, "Folder to write.", required=True)
flags.DEFINE_integer("num", 1024, "Images to write.")
flags.DEFINE_integer("noise", 24, "Std of the added per-pixel noise (0-255 scale).")


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  ds = tfds.load("cifar10", split=f"train[:{FLAGS.num}]", data_dir=FLAGS.data_dir,
                 download=False)
  sizes = []
  for i, x in enumerate(tfds.as_numpy(ds)):
    image = np.asarray(Image.fromarray(x["image"]).resize((500, 375), Image.BILINEAR),
                       np.float32)
    image = np.clip(image + rng.normal(0, FLAGS.noise, image.shape), 0, 255)
    folder = os.path.join(FLAGS.out, "train", f"class_{int(x['label'])}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{i:05d}.jpg")
    Image.fromarray(image.astype(np.uint8)).save(path, quality=90)
    sizes.append(os.path.getsize(path))
  print(f"{len(sizes)} JPEGs of 500x375 in {FLAGS.out}/train, "
        f"mean {np.mean(sizes) / 1024:.0f} KiB")


if __name__ == "__main__":
  app.run(main)
