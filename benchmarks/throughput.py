r"""Training and input-pipeline throughput of a config on the devices present.

    python -m benchmarks.throughput --config=configs/simclr_v2.py:cpu \
        --config.data_dir=../shared/tfds --steps=20

Prints a table (and with --json_out writes JSON) of: steady-state training images/s
(images, not views; compile excluded), the step time split into the device's
compute (steps on one resident batch) and the wait for input, the compile time,
model FLOP utilisation (the step's FLOPs from XLA's cost analysis of the
unoptimised program / step time / peak FLOP/s), the input pipeline's images/s
alone (with all cores and per core), and peak host / device memory.

Run it as a module from the repository root, like the main job (configs import
each other as ``configs.*``); a CPU is split into 8 XLA devices as in main.py.

``--synthetic`` times the device alone on random batches and never imports
TensorFlow, for accelerator hosts that have JAX but no TF (benchmarks/gpu.sh):

    python -m benchmarks.throughput --config=configs/byol.py --synthetic \
        --config.batch_size=256 --config.model.dtype=bfloat16
"""

import datetime
import os
import resource
import time

# The same default as cvrl_jax/main.py, so a config is timed as it trains: a CPU
# split into 8 XLA devices unless XLA_FLAGS chooses.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks import report  # noqa: E402
from cvrl_jax import methods, optim, parallel, step as step_lib  # noqa: E402
from cvrl_jax.data import device_augment  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("steps", 20, "Timed training steps (after 2 warm-up steps); 0 "
                     "times the input pipeline alone.")
flags.DEFINE_integer("input_batches", 50, "Batches timed for the input pipeline alone.")
flags.DEFINE_float("peak_flops", None, "Peak FLOP/s of all devices together, for MFU. "
                   "Default: the table below for accelerators; on a CPU, a measured "
                   "float32 matrix product (the practical peak of XLA on this host).")
flags.DEFINE_string("json_out", None, "Also write the results here as JSON.")
flags.DEFINE_bool("synthetic", False, "Random device-resident batches: device compute "
                  "only, no input pipeline, no TensorFlow import.")

# Dense bfloat16 peak FLOP/s per chip, from the vendors' data sheets; matched as
# substrings of ``device_kind``. MFU is quoted against it, as is usual.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
}


def cpu_matmul_flops(n: int = 2048, repeats: int = 10) -> float:
  """Best FLOP/s of an ``n x n`` float32 matrix product on the first device.

  Simulated CPU devices share the host's cores, so this is the whole host's
  practical peak, the denominator for every CPU device together.
  """
  a = jax.device_put(jnp.ones((n, n), jnp.float32), jax.devices()[0])
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def peak_flops(devices: list[jax.Device]) -> tuple[float, str]:
  """(peak FLOP/s of ``devices`` together, where the figure comes from)."""
  if FLAGS.peak_flops:
    return FLAGS.peak_flops, "--peak_flops"
  kind = devices[0].device_kind
  for name, flops in PEAK_FLOPS.items():
    if name in kind:
      return flops * len(devices), f"bf16 data-sheet peak of {name}"
  if devices[0].platform == "cpu":
    return cpu_matmul_flops(), "measured f32 matmul on this host"
  raise ValueError(f"No peak FLOP/s known for {kind!r}: pass --peak_flops.")


def dataset_throughput(ds, local_batch: int, num_batches: int, threads: int = 0
                       ) -> tuple[float, float]:
  """Images per second of wall time and per second of this process's CPU time (all
  its threads) of ``num_batches`` batches of ``local_batch`` from the tf.data ``ds``,
  after its first (which fills the shuffle buffer and starts the threads).

  ``threads`` > 0 limits tf.data to that many threads (per-core throughput). On a
  machine that others load, the CPU-time rate still measures the work per image.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if threads:
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    ds = ds.with_options(options)
  it = iter(tfds.as_numpy(ds))
  next(it)
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    next(it)
  images = num_batches * local_batch
  return (images / (time.perf_counter() - start),
          images / (time.process_time() - cpu_start))


def input_throughput(config, local_batch: int, num_batches: int,
                     threads: int = 0) -> float:
  """Images/s of the augmentation pipeline alone (after its first batch)."""
  from cvrl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return dataset_throughput(pipeline.train_dataset(config, local_batch), local_batch,
                            num_batches, threads)[0]


def lower_step(method, tx, config, mesh: jax.sharding.Mesh, batch: int) -> jax.stages.Lowered:
  """The train step as train.py builds it (device augmentation included), lowered
  for ``mesh`` on abstract inputs of ``batch`` images: nothing runs, no data is read."""
  size = config.image_size
  state = jax.eval_shape(lambda r: step_lib.create_train_state(
      method, tx, r, (batch, size, size, 3), mesh), jax.random.PRNGKey(0))
  sharded = parallel.batch_sharded(mesh)
  inputs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharded),
                        device_augment.batch_shapes(config, batch))
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=parallel.replicated(mesh))
  step = step_lib.make_train_step(method, tx, mesh, device_augment.batch_fn(config))
  return step.lower(state, inputs, rng)


def step_flops(method, tx, config) -> float:
  """FLOPs of one global train step, as XLA counts the program before optimisation.

  Lowered (not compiled) for one CPU device whatever runs the step: the count is
  the model's. On a GPU the compiled program's convolutions are cuDNN calls that
  XLA's cost analysis leaves out (and the GPU's lowered program has no analysis).
  """
  mesh = jax.sharding.Mesh(np.asarray(jax.devices("cpu")[:1]), (parallel.DATA,),
                           axis_types=(jax.sharding.AxisType.Explicit,))
  return lower_step(method, tx, config, mesh, config.batch_size).cost_analysis()["flops"]


def timed(fn, steps: int) -> float:
  """Seconds per call of ``fn`` (which returns something to wait for)."""
  start = time.perf_counter()
  for _ in range(steps):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def _random_array(rng: np.random.Generator, x: jax.ShapeDtypeStruct) -> np.ndarray:
  if x.dtype == jnp.float32:
    return rng.standard_normal(x.shape, np.float32)
  return rng.integers(0, np.iinfo(x.dtype).max, x.shape, dtype=x.dtype, endpoint=True)


def random_batches(config, local_batch: int):
  """Endless copies of one random batch shaped like the pipeline's (views only), so a
  synthetic step times the device augmentation too when it is on."""
  rng = np.random.default_rng(0)
  batch = jax.tree.map(lambda x: _random_array(rng, x),
                       device_augment.batch_shapes(config, local_batch))
  batch["label"] = np.zeros(local_batch, np.int32)
  while True:
    yield batch


def train_throughput(config, steps: int, synthetic: bool = False) -> dict:
  mesh = parallel.make_mesh(config.get("num_devices") or None)
  local_batch = parallel.check_batch_size(config.batch_size, mesh)
  if synthetic:
    num_classes, it = 1000, random_batches(config, local_batch)
  else:
    from cvrl_jax.data import pipeline, sources  # pylint: disable=g-import-not-at-top
    num_classes = sources.num_classes(config)
    it = pipeline.as_numpy(pipeline.train_dataset(config, local_batch))
  method = methods.get_method(config, num_classes, 1000)
  tx, _ = optim.create_optimizer(config, config.batch_size, 1000, 100)
  shape = (local_batch // jax.local_device_count(), config.image_size, config.image_size, 3)
  box = {"state": step_lib.create_train_state(method, tx, jax.random.PRNGKey(0), shape, mesh)}
  step = step_lib.make_train_step(method, tx, mesh, device_augment.batch_fn(config))
  rng = jax.device_put(jax.random.PRNGKey(1), parallel.replicated(mesh))

  batch = parallel.host_to_global(next(it), mesh)
  start = time.perf_counter()
  compiled = step.lower(box["state"], batch, rng).compile()
  compile_s = time.perf_counter() - start
  flops = step_flops(method, tx, config)

  def run(batch):
    box["state"], metrics = compiled(box["state"], batch, rng)
    return metrics

  jax.block_until_ready(run(batch))  # warm-up
  jax.block_until_ready(run(batch))

  device_s = timed(lambda: run(batch), steps)  # one resident batch: compute only
  wait = 0.0

  def from_input():
    nonlocal wait
    t = time.perf_counter()
    b = parallel.host_to_global(next(it), mesh)
    wait += time.perf_counter() - t
    return run(b)

  # Synthetic: the same resident batch, so step time is the device's alone.
  step_s = device_s if synthetic else timed(from_input, steps)
  # CPU devices keep no memory statistics: their memory is peak_host_rss_mb's.
  device_peak = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
  peak, peak_source = peak_flops(list(mesh.devices.flat))
  return {
      "train_images_per_s": config.batch_size / step_s,
      "step_s": step_s,
      "device_step_s": device_s,
      "input_wait_s_per_step": wait / steps,
      "compile_s": compile_s,
      "step_gflops": flops / 1e9,
      "achieved_gflops_per_s": flops / step_s / 1e9,
      "peak_gflops_per_s": peak / 1e9,
      "peak_source": peak_source,
      "mfu": flops / step_s / peak,
  } | ({"peak_device_bytes": max(device_peak)} if None not in device_peak else {})


def main(argv):
  del argv
  config = FLAGS.config
  mesh = parallel.make_mesh(config.get("num_devices") or None)
  local_batch = parallel.check_batch_size(config.batch_size, mesh)
  result = {
      "date": datetime.date.today().isoformat(),
      "config": FLAGS["config"].config_filename,
      "devices": f"{mesh.devices.size} x {jax.devices()[0].device_kind}",
      "jax": jax.__version__,
      "host_cores": os.cpu_count(),
      "batch_size": config.batch_size,
      "image_size": config.image_size,
      "dtype": config.model.get("dtype", "auto"),
  }
  if FLAGS.steps:
    result.update(train_throughput(config, FLAGS.steps, FLAGS.synthetic))
  if not FLAGS.synthetic:
    result["input_images_per_s"] = input_throughput(config, local_batch,
                                                    FLAGS.input_batches)
    result["input_images_per_s_1_core"] = input_throughput(
        config, local_batch, FLAGS.input_batches, threads=1)
  result["peak_host_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  report.emit(result, FLAGS.json_out)


if __name__ == "__main__":
  app.run(main)
