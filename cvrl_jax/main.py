"""Entry point: ``python -m cvrl_jax.main --config=configs/simclr_v2.py [--workdir=DIR]``.

The config's ``task`` picks the run: pre-training (no ``task`` key), or an
evaluation of a pre-trained workdir (configs/linear_eval.py, finetune.py,
distill.py, knn_eval.py, detection.py). Each is a module with
``train_and_evaluate(config, workdir)``.

Without ``--workdir`` the run goes to ``runs/<config file>_<variant>`` under the
current directory (``runs/simclr_v2`` for ``--config=configs/simclr_v2.py``,
``runs/simclr_v2_cpu`` for ``:cpu``), printed at the start: typing the same command
again resumes that run. ``--config.KEY`` overrides do not change the name, so a
run with other settings wants a ``--workdir`` of its own. A dataset that is not
prepared stops the run with how to prepare it, before anything is written.
"""

import importlib
import logging as py_logging
import os

# On a CPU-only machine XLA runs a large convolution batch about 2x slower than the
# same batch split over several CPU "devices" (docs/benchmarks.md), so split the
# host into 8 unless the user chose. GPUs and TPUs are unaffected: the CPU
# devices are not used when an accelerator is present.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

RUNS_DIR = "runs"  # where runs without --workdir go, under the current directory

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl and TensorBoard go here; "
                    f"default: {RUNS_DIR}/<config file>_<variant> in the current directory.")
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/simclr_v2.py:cpu.",
                                lock_config=True)
flags.mark_flags_as_required(["config"])

TASKS = {
    "pretrain": "cvrl_jax.train",
    "linear_eval": "cvrl_jax.evaluation.linear",
    "finetune": "cvrl_jax.evaluation.finetune",
    "distill": "cvrl_jax.evaluation.distill",
    "knn": "cvrl_jax.evaluation.knn_eval",
    "detection": "cvrl_jax.evaluation.detection",
}


class _QuietLibraries(py_logging.Filter):
  """Drops INFO lines of orbax (tens per checkpoint); warnings still pass."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno > py_logging.INFO or "/orbax/" not in record.pathname


def default_workdir(config_arg: str) -> str:
  """The workdir of ``--config=config_arg`` without ``--workdir``, absolute: the
  config file's name and the variant, e.g. ``runs/simclr_v2_cpu``."""
  path, _, variant = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.abspath(os.path.join(RUNS_DIR, f"{name}_{variant}" if variant else name))


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a short error for a bad ``--config.KEY`` override.

  ml_collections raises from deep inside its ConfigDict for an unknown key or a
  value of the wrong type; the user only needs the key and the reason.
  """
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError, TypeError, flags.Error) as e:
    while e.args and isinstance(e.args[0], Exception):  # unwrap KeyError in AttributeError
      e = e.args[0]
    reason = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    if isinstance(e, KeyError):
      reason = f"unknown key {reason}"
    raise SystemExit(f"Config refused: {reason}\nKeys and their types are in the "
                     "config file and in cvrl_jax/config.py.") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Imported once the flags are read: a refused config or flag is said at once,
  # not after TensorFlow's import (6 CPU-seconds on a 2-core laptop).
  import jax  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  from cvrl_jax import parallel  # pylint: disable=import-outside-toplevel
  from cvrl_jax.data import sources  # pylint: disable=import-outside-toplevel
  # tf.data only: keep TensorFlow off the accelerators JAX uses.
  tf.config.set_visible_devices([], "GPU")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  parallel.initialize_distributed()  # pod slices / JAX_COORDINATOR_ADDRESS; else a no-op
  logging.info("JAX process %d / %d, devices: %s", jax.process_index(),
               jax.process_count(), jax.devices())
  task = FLAGS.config.task
  if task not in TASKS:
    raise app.UsageError(f"config.task={task!r}: use one of {sorted(TASKS)}.")
  workdir = FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
  logging.info("Workdir: %s%s", workdir, "" if FLAGS.workdir else
               " (the default for this config; choose another with --workdir=DIR)")
  try:
    importlib.import_module(TASKS[task]).train_and_evaluate(FLAGS.config, workdir)
  except sources.DatasetNotFoundError as e:
    raise SystemExit(str(e)) from None


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
