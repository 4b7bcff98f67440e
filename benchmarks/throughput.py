r"""Training and input-pipeline throughput of a config on the devices present.

    python -m benchmarks.throughput --config=configs/simclr_v2.py:cpu \
        --config.data_dir=../shared/tfds --steps=20

Prints (and with --json_out writes) steady-state training images/s (images, not
views; compile excluded), the compile time, the time a step waits for input,
the input pipeline's images/s alone, and peak host / device memory.
Run it as a module from the repository root, like the main job (configs import
each other as ``configs.*``); a CPU is split into 8 XLA devices as in main.py.
"""

import json
import os
import resource
import time

# The same default as cvrl_jax/main.py, so a config is timed as it trains: a CPU
# split into 8 XLA devices unless XLA_FLAGS chooses.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
from absl import app, flags
from ml_collections import config_flags

from cvrl_jax import input_pipeline, methods, optim, parallel, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("steps", 20, "Timed training steps (after 2 warm-up steps).")
flags.DEFINE_integer("input_batches", 50, "Batches timed for the input pipeline alone.")
flags.DEFINE_string("json_out", None, "Also write the results here as JSON.")


def input_throughput(config, local_batch: int, num_batches: int) -> float:
  """Images/s of the augmentation pipeline alone (after its first batch)."""
  it = input_pipeline.as_numpy(input_pipeline.train_dataset(config, local_batch))
  next(it)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(it)
  return num_batches * local_batch / (time.perf_counter() - start)


def train_throughput(config, steps: int) -> dict:
  mesh = parallel.make_mesh(config.get("num_devices") or None)
  local_batch = parallel.check_batch_size(config.batch_size, mesh)
  method = methods.get_method(config, input_pipeline.num_classes(config), 1000)
  tx, _ = optim.create_optimizer(config, config.batch_size, 1000, 100)
  shape = (local_batch // jax.local_device_count(), config.image_size, config.image_size, 3)
  state = train.create_train_state(method, tx, jax.random.PRNGKey(0), shape, mesh)
  step = train.make_train_step(method, tx, mesh)
  rng = jax.device_put(jax.random.PRNGKey(1), parallel.replicated(mesh))
  it = input_pipeline.as_numpy(input_pipeline.train_dataset(config, local_batch))

  start = time.perf_counter()
  state, metrics = step(state, parallel.host_to_global(next(it), mesh), rng)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  state, metrics = step(state, parallel.host_to_global(next(it), mesh), rng)
  jax.block_until_ready(metrics)

  wait = 0.0
  start = time.perf_counter()
  for _ in range(steps):
    t = time.perf_counter()
    batch = parallel.host_to_global(next(it), mesh)
    wait += time.perf_counter() - t
    state, metrics = step(state, batch, rng)
  jax.block_until_ready(metrics)
  elapsed = time.perf_counter() - start
  device_peak = [d.memory_stats().get("peak_bytes_in_use", 0) if d.memory_stats() else 0
                 for d in jax.local_devices()]
  return {
      "train_images_per_s": steps * config.batch_size / elapsed,
      "step_s": elapsed / steps,
      "input_wait_s_per_step": wait / steps,
      "compile_s": compile_s,
      "peak_device_bytes": max(device_peak),
  }


def main(argv):
  del argv
  config = FLAGS.config
  mesh = parallel.make_mesh(config.get("num_devices") or None)
  result = {
      "config": FLAGS["config"].config_filename,
      "devices": f"{mesh.devices.size} x {jax.devices()[0].device_kind}",
      "batch_size": config.batch_size,
      **train_throughput(config, FLAGS.steps),
      "input_images_per_s": input_throughput(
          config, parallel.check_batch_size(config.batch_size, mesh), FLAGS.input_batches),
      "peak_host_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }
  width = max(map(len, result))
  for k, v in result.items():
    print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
