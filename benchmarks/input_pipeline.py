r"""Decode + augment throughput of a config's input pipeline, stage by stage, per core.

    python -m benchmarks.input_pipeline --config=configs/simclr_v2.py \
        --config.dataset=image_folder --config.data_dir=../shared/imagenette \
        --config.batch_size=64 --config.shuffle_buffer=1024 --input_batches=20

Times the train split's tf.data pipeline in images/s, after its first batch, on
one core and on all (``throughput.dataset_throughput``), at three stages:

* ``decode``: the files read and decoded (``sources.read``), nothing else (each
  image reduced to its maximum, so that nothing of it is left unused);
* ``crop_flip``: the host part of ``augment.on_device``: decode, random resized
  crop, flip, uint8 views (what the 224 px presets send to the accelerator);
* ``host_recipe``: the whole recipe in tf.data (``on_device=False``): colour
  jitter, grayscale, blur and solarize on the host too.

Each is reported per second of wall time and per second of the process's CPU
time: on a machine that other jobs load, the second still measures the work per
image (one thread's images per CPU-second is the per-core rate of an idle core).
On real photographs (``../shared/imagenette``) the per-core figures say how many
host cores keep an accelerator fed. ``shuffle_buffer`` changes no per-image work,
only how many images are decoded before the first batch (and the memory they take).
"""

import datetime
import os

from absl import app, flags

# --config, --input_batches and --json_out are throughput's (absl flags are
# process-wide, so the benchmarks share them), and so is the timing.
from benchmarks import report, throughput

FLAGS = flags.FLAGS

STAGES = ("decode", "crop_flip", "host_recipe")


def stage_dataset(config, stage: str, local_batch: int):
  """Endless batches of ``local_batch`` of the train split, up to ``stage``."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cvrl_jax.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  if stage == "decode":  # one number per image: folders of mixed sizes batch too
    ds = sources.read(config, config.train_split).map(lambda x: tf.reduce_max(x["image"]))
    return ds.repeat().batch(local_batch)
  config = config.copy_and_resolve_references()
  config.augment.on_device = stage == "crop_flip"
  return pipeline.train_dataset(config, local_batch)


def main(argv):
  del argv
  config, batch, batches = FLAGS.config, FLAGS.config.batch_size, FLAGS.input_batches
  result = {"date": datetime.date.today().isoformat(),
            "config": FLAGS["config"].config_filename, "dataset": config.dataset,
            "data_dir": config.data_dir, "host_cores": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0], "batch_size": batch,
            "image_size": config.image_size, "num_views": config.num_views}
  for stage in STAGES:
    for threads, name in ((1, "1_core"), (0, "all_cores")):
      wall, cpu = throughput.dataset_throughput(stage_dataset(config, stage, batch), batch,
                                                batches, threads)
      result[f"{stage}_images_per_s_{name}"] = wall
      result[f"{stage}_images_per_cpu_s_{name}"] = cpu
  result["load_average_1min_after"] = os.getloadavg()[0]
  report.emit(result, FLAGS.json_out)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
