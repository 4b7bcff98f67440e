"""The benchmarks run: the synthetic step timing imports no TensorFlow (accelerator
hosts without it, benchmarks/gpu.sh), and the PyTorch peer trains a step."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs a module with TensorFlow and TFDS made unimportable.
WITHOUT_TF = """
import runpy, sys
class Block:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
      raise ImportError("TensorFlow blocked by the test: " + name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _run(args: list[str], tmp_path) -> dict:
  out = tmp_path / "result.json"
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  proc = subprocess.run([sys.executable, *args, f"--json_out={out}"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text())


def test_synthetic_throughput_needs_no_tensorflow(tmp_path):
  result = _run(["-c", WITHOUT_TF, "benchmarks.throughput", "--config=configs/byol.py:cpu",
                 "--synthetic", "--steps=2", "--config.batch_size=8",
                 "--config.image_size=32"], tmp_path)
  assert result["devices"] == "2 x cpu"
  assert result["train_images_per_s"] > 0
  assert result["input_wait_s_per_step"] == 0
  assert "input_images_per_s" not in result
  # A quarter-width ResNet-18 at 32 px: a few GFLOPs per 8-image step, not zero
  # (a cost analysis that loses the convolutions gives a small fraction).
  assert 1 < result["step_gflops"] < 20
  assert result["mfu"] > 0  # its peak is measured while other tests may load the cores


def test_torch_peer_trains_a_step(tmp_path):
  pytest.importorskip("torch", reason="the PyTorch peer needs torch: pip install -e '.[test]'")
  result = _run(["-m", "benchmarks.torch_peer", "--method=byol", "--batch_size=4",
                 "--image_size=32", "--steps=1", "--no_compile"], tmp_path)
  assert result["train_images_per_s"] > 0
  # ResNet-50 at 32 px: ~0.08 GFLOPs forward per image-view, x3 for training.
  assert 1 < result["step_gflops"] < 50


def test_the_benchmark_modules_import_in_one_process():
  """absl flags are process-wide: two modules defining the same flag cannot both be
  imported (as test files sharing a pytest worker do)."""
  from benchmarks import memory, scaling, throughput  # noqa: F401
