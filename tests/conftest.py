"""Test set-up: 8 simulated CPU devices, TFDS pointed at the shared offline data."""

import os

import pytest

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
# Most tests run a tiny program a few times, so compiling it is most of their time,
# and XLA's LLVM optimisations double the compile (83 -> 38 s of the MoCo v3 1-vs-8
# runs, for 50% slower steps): off here and in the subprocesses, as flax's tests turn
# them off. The tests that train for minutes turn them back on (``optimized_xla``).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


# The longest files first: with two workers taking a file at a time, a long file
# that starts last runs alone at the end (the learning test is ~5 of the minutes).
LONGEST_FIRST = ("test_learning.py", "test_multihost.py", "test_benchmarks.py",
                 "test_notebook.py", "test_faults.py", "test_eval.py", "test_moco.py")


def pytest_collection_modifyitems(items):
  def rank(item):
    name = os.path.basename(str(item.fspath))
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
  items.sort(key=rank)  # stable: the order within a file is kept


@pytest.fixture
def optimized_xla(monkeypatch):
  """XLA's usual optimisations for this test and the processes it starts: a test
  that trains for minutes runs as users' runs do."""
  import jax
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "0")
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", before)
