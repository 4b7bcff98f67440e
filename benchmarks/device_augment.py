r"""Cost of the device augmentation (``augment.on_device``) of one batch, alone.

    python -m benchmarks.device_augment --config=configs/simclr_v2.py --batch=256

Jits ``device_augment.batch_fn(config)`` on one device for a batch of uint8 views
of ``config.image_size`` px (every view of ``batch`` images) and prints the time
per batch (best of ``--repeats``, compile excluded) and XLA's FLOP count of the
unoptimised program, to set against the train step's (benchmarks/throughput.py).
"""

import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from cvrl_jax.data import device_augment

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("batch", 256, "Images per batch (each gives num_views views).")
flags.DEFINE_integer("repeats", 5, "Timed calls; the best is reported.")


def random_batch(config, batch: int) -> dict:
  rng = np.random.default_rng(0)
  size = config.image_size
  return {"views": tuple(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
                         for _ in range(config.get("num_views", 2))),
          "aug_seed": rng.integers(0, 2**32, (batch, 2), dtype=np.uint32)}


def main(argv):
  del argv
  config = FLAGS.config.copy_and_resolve_references()
  config.augment.on_device = True
  fn = jax.jit(device_augment.batch_fn(config))
  batch = jax.device_put(random_batch(config, FLAGS.batch))
  flops = fn.lower(batch).cost_analysis()["flops"]
  jax.block_until_ready(fn(batch))
  best = float("inf")
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(batch))
    best = min(best, time.perf_counter() - start)
  print(f"device {jax.devices()[0].device_kind}, {FLAGS.batch} images x "
        f"{len(batch['views'])} views of {config.image_size} px: {best * 1e3:.1f} ms per "
        f"batch ({FLAGS.batch / best:.0f} images/s), {flops / 1e9:.2f} GFLOPs "
        f"({flops / FLAGS.batch / 1e6:.1f} MFLOPs per image)")


if __name__ == "__main__":
  app.run(main)
