"""Multi-host for real on the CPU: 2 processes x 4 devices against 1 process x 8.

Each run is a fresh Python process (``python tests/test_multihost.py WORKDIR``):
the 2-process run joins through ``parallel.initialize_distributed`` on loopback,
with gloo CPU collectives, exactly as the hosts of a TPU pod slice would. Both runs
train SimCLR and MoCo v2 for a few steps into their own workdirs.

Same losses need the same global batches. The real input pipeline gives each
process its own shard and its own shuffle (so a 2-process run sees other batches
than a 1-process run); here every process instead takes its rows of one fixed
global batch of real CIFAR-10 images. The real per-process sharding is checked
separately (disjoint shards covering the split), and the kNN monitor at the end
of each run reads the real eval split per process.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 600
STEPS = 6  # checkpoints at 2, 4 and 6
# Process 1 starts its run, and its first train step, this many seconds after process 0:
# more than the 30 s gloo gives a new collective to connect, which only the barriers
# of ``parallel.wait_for_all_processes`` bridge.
LATE_ENV, LATE_S = "CVRL_TEST_LATE", 35
FAULT_ENV = "CVRL_TEST_FAULT"  # "SIGNAL:PROCESS:STEP": that process signals itself then
# The fault runs' heartbeat timeout, instead of parallel.HEARTBEAT_TIMEOUT_S (60 s): the
# survivor of a kill -9 waits this long. Heartbeats come from a thread of their own, so
# a compile on a loaded machine does not miss them.
FAULT_HEARTBEAT_S = 20


def _fixed_global_batches(config, local_batch: int, start_step: int):
  """This process's rows of a fixed global batch stream (same for any process count)."""
  import jax
  import tensorflow as tf
  import tensorflow_datasets as tfds

  builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  data = tfds.as_numpy(builder.as_dataset(split="train[:64]", batch_size=-1))
  images = tf.image.resize(data["image"].astype(np.float32) / 255.0,
                           (config.image_size,) * 2).numpy()
  lo = jax.process_index() * local_batch
  global_batch = local_batch * jax.process_count()
  steps = []
  for step in range(config.total_steps):
    rows = (np.arange(global_batch) + step * global_batch) % len(images)
    mine = rows[lo:lo + local_batch]
    steps.append({"views": (images[mine], images[mine, :, ::-1] * 0.8),
                  "label": data["label"][mine].astype(np.int32)})
  stacked = {"views": tuple(np.stack([s["views"][v] for s in steps]) for v in range(2)),
             "label": np.stack([s["label"] for s in steps])}
  return tf.data.Dataset.from_tensor_slices(stacked).skip(start_step)


def _shard_hashes(config) -> list[str]:
  """Hashes of the real eval pipeline's unpadded images on this process."""
  from cvrl_jax.data import pipeline

  ds, _ = pipeline.eval_dataset(config, "test", 32, num=96)
  out = []
  for batch in pipeline.as_numpy(ds):
    for image, mask in zip(batch["image"], batch["mask"]):
      if mask:
        out.append(hashlib.sha1(image.tobytes()).hexdigest())
  return out


def _inject(signal_name: str, process: str, step: str) -> None:
  """Process ``process`` sends itself ``signal_name`` just before its step ``step``."""
  import signal

  import jax
  from cvrl_jax import step as step_lib
  if jax.process_index() != int(process):
    return
  make_step = step_lib.make_train_step

  def signalled_at(*args):
    step_fn, calls = make_step(*args), []

    def wrapped(*a):
      calls.append(1)
      if len(calls) == int(step):
        os.kill(os.getpid(), getattr(signal, signal_name))
      return step_fn(*a)
    return wrapped
  step_lib.make_train_step = signalled_at


def _late(seconds: float) -> None:
  """Process 1 sleeps ``seconds`` before its first run, and again before that run's
  first step (each is where a collective follows what each process does alone)."""
  import time

  import jax
  from cvrl_jax import step as step_lib
  from cvrl_jax import train
  if jax.process_index() != 1:
    return
  run, make_step = train.train_and_evaluate, step_lib.make_train_step

  def late_run(*args):
    train.train_and_evaluate = run
    time.sleep(seconds)
    return run(*args)

  def late_step(*args):
    step_lib.make_train_step = make_step
    step_fn, calls = make_step(*args), []

    def wrapped(*a):
      if not calls:
        time.sleep(seconds)
      calls.append(1)
      return step_fn(*a)
    return wrapped
  train.train_and_evaluate, step_lib.make_train_step = late_run, late_step


def worker(workdir: str) -> None:
  """One process of a run: joins the run (if the environment says so), trains."""
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from cvrl_jax import parallel, train
  from cvrl_jax.data import pipeline

  fault = os.environ.get(FAULT_ENV)
  if fault is not None:
    parallel.HEARTBEAT_TIMEOUT_S = FAULT_HEARTBEAT_S
  parallel.initialize_distributed()
  from configs import moco_v2
  from helpers import tiny_config, tiny_moco_config

  pipeline.train_dataset = _fixed_global_batches
  runs = {"simclr": tiny_config(), "moco_v2": tiny_moco_config(moco_v2)}
  if fault is not None:  # SimCLR alone, with the fault injected ("" for none: a restart)
    runs = {"simclr": runs["simclr"]}
    if fault:
      _inject(*fault.split(":"))
  if os.environ.get(LATE_ENV):
    _late(float(os.environ[LATE_ENV]))
  for name, config in runs.items():
    config.update(total_steps=STEPS, num_devices=0, checkpoint_every_steps=2)
    config.knn.update(num_train_examples=128, num_eval_examples=64, batch_size=32)
    train.train_and_evaluate(config, os.path.join(workdir, name))
  if fault is not None:
    return
  with open(os.path.join(workdir, f"shard_{jax.process_index()}.json"), "w") as f:
    json.dump({"hashes": _shard_hashes(runs["simclr"]), "devices": jax.device_count(),
               "local_devices": jax.local_device_count()}, f)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(workdir, num_processes: int, devices_per_process: int, **env_extra):
  """Starts ``num_processes`` workers on loopback (``env_extra`` in their environment)."""
  env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}",
         **env_extra}
  for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(k, None)
  if num_processes > 1:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}",
               JAX_NUM_PROCESSES=str(num_processes))
  script = os.path.abspath(__file__)
  return [subprocess.Popen([sys.executable, script, str(workdir)], cwd=ROOT,
                           env={**env, "JAX_PROCESS_ID": str(i)} if num_processes > 1
                           else env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True) for i in range(num_processes)]


def _launch(workdir, num_processes: int, devices_per_process: int, **env_extra) -> list[str]:
  """Runs ``num_processes`` workers to the end; every one must succeed. Their outputs."""
  return _finish(_start(workdir, num_processes, devices_per_process, **env_extra))


def _finish(procs) -> list[str]:
  """Waits for started workers; every one must succeed. Their outputs."""
  failed, outputs = [], []
  try:
    for i, p in enumerate(procs):
      out, _ = p.communicate(timeout=TIMEOUT_S)
      outputs.append(out)
      if p.returncode:
        failed.append(f"--- process {i} exited {p.returncode}:\n{out[-4000:]}")
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert not failed, "\n".join(failed)
  return outputs


@pytest.mark.parametrize("env, joins", [
    ({}, False),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"},
     False),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:8476", "JAX_NUM_PROCESSES": "4",
      "JAX_PROCESS_ID": "3"}, True),
])
def test_initialize_distributed_joins_only_when_told(monkeypatch, env, joins):
  import jax
  from cvrl_jax import parallel
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  monkeypatch.setattr(jax, "process_count", lambda: 4)
  assert parallel.initialize_distributed(env, on_tpu_host=False) == joins
  assert calls == ([{"coordinator_address": "10.0.0.2:8476", "num_processes": 4,
                     "process_id": 3, "heartbeat_timeout_seconds": 60}] if joins else [])


def test_initialize_distributed_auto_detects_on_a_tpu_vm(monkeypatch):
  import jax
  from cvrl_jax import parallel
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  assert parallel.initialize_distributed({}, on_tpu_host=True)
  # JAX reads the slice's workers from the TPU VM metadata
  assert calls == [{"heartbeat_timeout_seconds": 60}]


def test_incomplete_multi_process_settings_are_refused():
  from cvrl_jax import parallel
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES, JAX_PROCESS_ID unset"):
    parallel.initialize_distributed({"JAX_COORDINATOR_ADDRESS": "h:1"}, on_tpu_host=False)


def _metrics(path) -> list[dict]:
  with open(path / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  one, two = tmp_path_factory.mktemp("one_x8"), tmp_path_factory.mktemp("two_x4")
  # Side by side (the 2-process run's process 1 sleeps 2 x LATE_S): process 1 late, a
  # slow host or a loaded machine (CI once failed here without the barriers).
  _finish(_start(one, num_processes=1, devices_per_process=8) +
          _start(two, num_processes=2, devices_per_process=4, **{LATE_ENV: str(LATE_S)}))
  return one, two


@pytest.mark.parametrize("method", ["simclr", "moco_v2"])
def test_two_processes_give_the_same_losses_as_one(runs, method):
  one, two = (_metrics(r / method) for r in runs)
  losses = [{r["step"]: r["loss"] for r in m if "loss" in r} for m in (one, two)]
  assert sorted(losses[0]) == list(range(1, STEPS + 1))
  assert sorted(losses[1]) == sorted(losses[0])  # each step written once: process 0 only
  for step in losses[0]:
    assert losses[1][step] == pytest.approx(losses[0][step], rel=2e-4), step
  knn = [[r["knn_top1"] for r in m if "knn_top1" in r] for m in (one, two)]
  assert len(knn[1]) == 1 and knn[1][0] == pytest.approx(knn[0][0], abs=100 / 64 + 1e-6)


def _restore_as_numpy(checkpoints, step: int) -> dict:
  """A checkpoint written by any number of processes, read back as host arrays."""
  import jax
  import orbax.checkpoint as ocp
  assert sorted(os.listdir(checkpoints), key=int) == ["2", "4", str(STEPS)]
  path = checkpoints / str(step) / "default"
  ckptr = ocp.PyTreeCheckpointer()
  tree = ckptr.metadata(path).item_metadata.tree
  return ckptr.restore(path, restore_args=jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))


@pytest.mark.parametrize("method", ["simclr", "moco_v2"])
def test_collective_checkpoint_equals_the_single_process_one(runs, method):
  """Every checkpoint has the single-process tree, shapes and dtypes; the first one
  (step 2) its values too. Later values are the losses test's business: the two
  meshes reduce in different orders and the steps amplify it (on CI's machine one
  BatchNorm bias's momentum trace was 2e-3 apart at step 6, here 1e-5)."""
  import jax
  for step in (2, 4, STEPS):
    one, two = (_restore_as_numpy(r / method / "checkpoints", step) for r in runs)
    assert jax.tree.structure(one) == jax.tree.structure(two), step
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
      assert np.shape(a) == np.shape(b) and np.asarray(a).dtype == np.asarray(b).dtype, step
      if step == 2:
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_each_process_reads_its_own_shard_of_the_split(runs):
  one, two = runs
  with open(one / "shard_0.json") as f:
    single = json.load(f)
  shards = []
  for i in range(2):
    with open(two / f"shard_{i}.json") as f:
      shards.append(json.load(f))
  assert single["devices"] == 8 and [s["devices"] for s in shards] == [8, 8]
  assert [s["local_devices"] for s in shards] == [4, 4]
  a, b = (set(s["hashes"]) for s in shards)
  assert len(a) == len(b) == 48 and not a & b
  assert a | b == set(single["hashes"])


def test_only_process_zero_writes_logs(runs):
  _, two = runs
  events = [f for f in os.listdir(two / "simclr") if f.startswith("events.out")]
  assert len(events) == 1  # one TensorBoard file, from process 0
  assert (two / "simclr" / "config.json").exists()


def _losses(workdir) -> dict[int, float]:
  """Loss by step; a step trained again after a restart counts as the last time."""
  return {r["step"]: r["loss"] for r in _metrics(workdir) if "loss" in r}


def _run_until_a_peer_dies(workdir, **env_extra) -> tuple[list[str], float]:
  """Starts 2 workers, process 1 to die by SIGKILL; both outputs and the seconds process 0
  lived on after it. Asserts process 1 died of the signal and process 0 failed."""
  import time
  procs = _start(workdir, 2, 4, **env_extra)
  try:
    dead, _ = procs[1].communicate(timeout=TIMEOUT_S)
    died = time.monotonic()
    survivor, _ = procs[0].communicate(timeout=TIMEOUT_S)
    waited = time.monotonic() - died
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert procs[1].returncode == -9, f"process 1:\n{dead[-3000:]}\nprocess 0:\n{survivor[-3000:]}"
  assert procs[0].returncode != 0, survivor[-3000:]
  return [survivor, dead], waited


def test_a_dead_process_then_a_preempted_one_cost_no_step_past_the_last_checkpoint(
    runs, tmp_path):
  """Two faults of one run, then its end (a launch saved against testing each alone).

  1. kill -9 of process 1 before its step 4: process 0 exits by itself once process 1
     has missed ``FAULT_HEARTBEAT_S`` of heartbeats, saying a peer died.
  2. Both started again resume from step 2 (the last complete checkpoint); process 1
     alone gets SIGTERM (one worker of a slice preempted) before its second step
     there: both stop at the same step after saving it together, and exit cleanly.
  3. Both started again resume there and finish with the uninterrupted run's losses.
  """
  import re
  (survivor, dead), waited = _run_until_a_peer_dies(tmp_path, **{FAULT_ENV: "SIGKILL:1:4"})
  # JAX's coordination service ends it, saying why; our start-up line says what to do.
  assert "another task died" in survivor, (f"process 0:\n{survivor[-3000:]}\n"
                                           f"process 1:\n{dead[-3000:]}")
  assert waited < FAULT_HEARTBEAT_S + 60, waited
  assert "start every process again with the same command" in survivor
  assert sorted(os.listdir(tmp_path / "simclr" / "checkpoints")) == ["2"]
  print(f"the survivor exited {waited:.0f} s after its peer died")

  outputs = _launch(tmp_path, 2, 4, **{FAULT_ENV: "SIGTERM:1:2"})
  stops = [re.findall(r"Stopped at step (\d+) after preemption", out) for out in outputs]
  assert stops[0] and stops[0] == stops[1], [o[-2000:] for o in outputs]
  stop = int(stops[0][0])
  assert 4 <= stop < STEPS
  saved = sorted(int(n) for n in os.listdir(tmp_path / "simclr" / "checkpoints"))
  assert saved[-1] == stop

  _launch(tmp_path, 2, 4, **{FAULT_ENV: ""})
  logged = [r["step"] for r in _metrics(tmp_path / "simclr") if "loss" in r]
  # steps 3.. again from step 2, then stop+1.. from the preemption's checkpoint
  assert logged == [1, 2, 3, *range(3, stop + 1), *range(stop + 1, STEPS + 1)], logged
  resumed, straight = _losses(tmp_path / "simclr"), _losses(runs[1] / "simclr")
  assert sorted(resumed) == list(range(1, STEPS + 1))
  for step in range(3, STEPS + 1):
    assert resumed[step] == pytest.approx(straight[step], rel=1e-6), step


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  worker(sys.argv[1])
