"""Test set-up: 8 simulated CPU devices, TFDS pointed at the shared offline data."""

import os

# Must happen before jax is imported anywhere: every multi-device path is tested
# on 8 simulated devices, like a TPU v3-8 slice.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_TFDS = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tfds"))

# Tests compile the same small programs many times (every train_and_evaluate call
# jits init, step and eval), in this process and in the subprocesses the CLI,
# benchmark and multi-process tests start (they inherit the environment): one
# persistent cache makes the repeats cheap.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.environ.get("TMPDIR", "/tmp"), "cvrl_jax_jit_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


# The longest files first: with two workers taking a file at a time, a long file
# that starts last runs alone at the end (the learning test is ~5 of the minutes).
LONGEST_FIRST = ("test_learning.py", "test_multihost.py", "test_benchmarks.py",
                 "test_notebook.py", "test_faults.py", "test_eval.py", "test_moco.py")


def pytest_collection_modifyitems(items):
  def rank(item):
    name = os.path.basename(str(item.fspath))
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
  items.sort(key=rank)  # stable: the order within a file is kept
