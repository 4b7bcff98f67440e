"""The benchmarks run: the synthetic step timing imports no TensorFlow (accelerator
hosts without it, benchmarks/gpu.sh), the PyTorch peer trains a step, and the
TensorFlow peer is the same model and loss as cvrl_jax's and times its step and
convolutions."""

import json
import os
import subprocess
import sys
import time

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
                        check=False, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text())


@pytest.mark.parametrize("on_device", ["false", "true"])  # gpu.sh times both
def test_synthetic_throughput_needs_no_tensorflow(tmp_path, on_device):
  result = _run(["-c", WITHOUT_TF, "benchmarks.throughput", "--config=configs/byol.py:cpu",
                 "--synthetic", "--steps=2", "--config.batch_size=8",
                 "--config.image_size=32", f"--config.augment.on_device={on_device}"], tmp_path)
  assert result["devices"] == "2 x cpu"
  assert result["train_images_per_s"] > 0
  # a CPU's devices keep no memory statistics: no made-up 0, the host's peak instead
  assert "peak_device_bytes" not in result and result["peak_host_rss_mb"] > 0
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


@pytest.mark.parametrize("depth", [18, 50])
def test_tf_peer_is_cvrl_jax_resnet_and_nt_xent(depth):
  import jax
  import numpy as np

  from benchmarks import tf_peer
  from cvrl_jax import losses
  from cvrl_jax.models import resnet  # the factory function

  shapes = jax.eval_shape(lambda x: resnet(depth, stem="cifar").init(
      jax.random.key(0), x, train=False), jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32))
  n_jax = sum(x.size for x in jax.tree.leaves(shapes["params"]))
  n_tf = sum(int(np.prod(v.shape)) for v in tf_peer.resnet_cifar(depth).trainable_variables)
  assert n_tf == n_jax
  z = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
  want = losses.nt_xent(z[:8], z[8:], temperature=0.5)
  np.testing.assert_allclose(float(tf_peer.nt_xent(z, 0.5)), float(want), rtol=1e-5)


def test_tf_peer_times_its_step_and_each_convolution(tmp_path):
  result = _run(["-m", "benchmarks.tf_peer", "--batch_size=4", "--steps=1", "--layers",
                 "--layer_batch=2"], tmp_path)
  assert result["train_images_per_s"] > 0
  from benchmarks.tf_peer import RESNET18_CIFAR_CONVS
  # forward, input and kernel gradients of each conv, less the stem's input gradient
  assert len(result["layers"]) == 3 * len(RESNET18_CIFAR_CONVS) - 1
  assert all(r["xla_s"] > 0 and r["tf_s"] > 0 for r in result["layers"])


def test_pointwise_conv_benchmark_lists_resnet50s_1x1_convs():
  import collections

  import jax
  import jax.numpy as jnp

  from benchmarks.pointwise_conv import resnet_pointwise_convs
  from cvrl_jax.models import ResNet
  shapes = jax.eval_shape(lambda x: ResNet(depth=50).init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  in_model = collections.Counter(k.shape[2:] for k in jax.tree.leaves(shapes["params"])
                                 if k.ndim == 4 and k.shape[:2] == (1, 1))
  listed = collections.Counter()
  for (_, cin, cout, _), count in resnet_pointwise_convs(50, 224, "imagenet"):
    listed[(cin, cout)] += count
  assert listed == in_model and sum(in_model.values()) == 36


def test_pointwise_conv_benchmark_times_both_ways(tmp_path):
  result = _run(["-m", "benchmarks.pointwise_conv", "--image_size=16", "--stem=cifar",
                 "--batch=2"], tmp_path)
  from benchmarks.pointwise_conv import resnet_pointwise_convs
  assert len(result["convs"]) == len(resnet_pointwise_convs(50, 16, "cifar")) == 15
  assert all(v > 0 for r in result["convs"] for k, v in r.items() if k.endswith("_s"))
  assert result["conv_s"] > 0 and result["matmul_s"] > 0


def test_the_benchmark_modules_import_in_one_process():
  """absl flags are process-wide: two modules defining the same flag cannot both be
  imported (as test files sharing a pytest worker do)."""
  from benchmarks import checkpoint_save, memory, scaling, throughput  # noqa: F401


def test_checkpoint_save_times_each_save_of_the_whole_state():
  """Our way only: orbax's default compiles a slice per device and array (a minute
  on a loaded 2-core machine)."""
  from benchmarks import checkpoint_save
  from helpers import tiny_config
  out = checkpoint_save.save_seconds(tiny_config(), "whole", saves=2)
  assert out["arrays"] > 50 and len(out["seconds"]) == 2 and min(out["seconds"]) > 0


def test_time_to_accuracy_records_a_curve_per_run(tmp_path):
  """Two tiny runs end to end: kNN at step 0 and at each evaluation point, on the
  loop's clock (start-up included, evaluations excluded), JSON and PNG written.
  Both curves train the same program (the runs share the suite's JIT cache)."""
  from conftest import SHARED_TFDS
  tiny = ["--config.total_steps=4", "--config.batch_size=16", "--config.num_train_examples=256",
          "--config.image_size=16", "--config.model.width_multiplier=0.125",
          # after the tool's standard-protocol flags, so these small sizes win
          "--config.knn.num_train_examples=256", "--config.knn.num_eval_examples=64",
          "--config.knn.batch_size=64"]
  out = tmp_path / "tta"
  proc = subprocess.run([sys.executable, "-m", "benchmarks.time_to_accuracy",
                         "--run=simclr=configs/simclr_v2.py:cpu",
                         "--run=again=configs/simclr_v2.py:cpu",
                         f"--data_dir={SHARED_TFDS}", f"--out={out}", "--evals=2", "--", *tiny],
                        cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((out / "time_to_accuracy.json").read_text())
  assert [r["name"] for r in report["runs"]] == ["simclr", "again"]
  for run in report["runs"]:
    assert "--config.knn.num_train_examples=0" in run["command"]  # the standard protocol
    curve = run["curve"]
    assert [p["step"] for p in curve] == [0, 2, 4]
    minutes = [p["minutes"] for p in curve]
    assert 0 < minutes[0] < minutes[1] < minutes[2] < run["wall_minutes"]
    assert all(0 <= p["knn_top1"] <= 100 for p in curve)
    rows = [json.loads(line) for line in open(out / "work" / run["name"] / "metrics.jsonl")]
    assert {r["step"] for r in rows if "train_seconds" in r} == {0, 2, 4}
  assert (out / "time_to_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "simclr: kNN" in proc.stdout and "again: kNN" in proc.stdout


def test_gpu_speedrun_runs_end_to_end_on_the_cpu(tmp_path):
  """benchmarks/gpu_speedrun.sh with a tiny budget and model: the input keep-up
  check and a SimCLR curve whose schedule the budget set, as a GPU run writes
  them; a data dir without cifar10/ stops at once with the fix."""
  from conftest import SHARED_TFDS
  tiny = ["--config.batch_size=16", "--config.num_train_examples=256",
          "--config.image_size=16", "--config.model.width_multiplier=0.125",
          "--config.knn.num_train_examples=256", "--config.knn.num_eval_examples=64",
          "--config.knn.batch_size=64"]
  out = tmp_path / "speedrun"
  env = {**os.environ, "PYTHON": sys.executable, "METHODS": "simclr"}
  proc = subprocess.run(["bash", "benchmarks/gpu_speedrun.sh", SHARED_TFDS, str(out), "0.7",
                         "--", *tiny], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  speed = json.loads((out / "throughput.json").read_text())
  assert speed["input_images_per_s"] > 0 and speed["train_images_per_s"] > 0
  assert speed["batch_size"] == 16 and speed["image_size"] == 16
  [run] = json.loads((out / "time_to_accuracy.json").read_text())["runs"]
  assert run["config"] == "configs/simclr_v2.py:cifar10"
  assert f"--config.total_steps={run['total_steps']}" in run["command"]
  assert "--config.knn.num_train_examples=0" in run["command"]
  steps = [p["step"] for p in run["curve"]]
  assert steps[0] == 0 and steps[-1] == run["total_steps"] and len(steps) >= 2
  assert (out / "time_to_accuracy.png").exists()
  missing = subprocess.run(["bash", "benchmarks/gpu_speedrun.sh", str(tmp_path)], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=60)
  assert missing.returncode == 2 and "No cifar10/" in missing.stderr


def test_long_run_watch_finds_the_trainer_and_bounds_growth(tmp_path):
  """The leak watch of benchmarks/long_run.py: it finds the training process in a
  tree, reads its resources, and fails growth past the bounds (the 2,000-step
  figures are in docs/benchmarks.md)."""
  from benchmarks import long_run
  # The sleeper says when its interpreter is up: sampled just after exec, its RSS
  # is still a fraction of a MiB (CI saw 0.18).
  ready = tmp_path / "ready"
  (tmp_path / "sleeper.py").write_text(
      f"import pathlib, time\npathlib.Path({str(ready)!r}).touch()\ntime.sleep(30)\n")
  shell = subprocess.Popen(["bash", "-c", '"$PY" "$SCRIPT" "$ARG" & wait'],
                           env={**os.environ, "PY": sys.executable, "ARG": "cvrl_jax.main",
                                "SCRIPT": str(tmp_path / "sleeper.py")})
  try:
    for _ in range(600):
      pid = long_run.trainer(shell.pid)
      if pid and ready.exists():
        break
      time.sleep(0.05)
    assert pid and pid != shell.pid and ready.exists()
    s = long_run.sample(pid)
    assert s["rss_mib"] > 1 and s["fds"] >= 3 and s["threads"] >= 1
  finally:
    subprocess.run(["pkill", "-P", str(shell.pid)])
    shell.wait()
  assert long_run.sample(pid) is None  # gone

  def run(rss, fds=10, threads=20):
    return [{"rss_mib": r, "fds": fds, "threads": threads} for r in rss]
  flat = run([900] * 10 + [1000] * 30)
  bounds = dict(warmup=0.25, max_rss_growth=0.05, max_new_fds=0, max_new_threads=0)
  assert long_run.verdict(flat, **bounds)["ok"]
  growing = run([900] * 10 + [1000 + 5 * i for i in range(30)])
  assert not long_run.verdict(growing, **bounds)["ok"]
  leaking = flat[:20] + run([1000] * 20, fds=11)
  assert long_run.verdict(leaking, **bounds)["new_fds"] == 1
  assert not long_run.verdict(leaking, **bounds)["ok"]
  # An evaluation's threads and a checkpoint's files, while they last: no leak.
  busy = flat[:25] + run([1000] * 2, fds=14, threads=80) + flat[27:]
  assert long_run.verdict(busy, **bounds)["ok"]
