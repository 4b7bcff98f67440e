"""The path to a TPU pod: launch/tpu_vm.sh (dry runs, refusals, the preemption watch
with a stand-in gcloud) and workdirs given as URLs (gs://)."""

import json
import os
import re
import shlex
import stat
import subprocess

import pytest

from cvrl_jax import checkpoint, loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "launch", "tpu_vm.sh")
VM = ["--name", "ssl", "--zone", "us-central2-b"]
RUN = ["--config", "configs/simclr_v2.py", "--workdir", "gs://bucket/simclr"]


@pytest.fixture(scope="module")
def no_gcloud(tmp_path_factory) -> str:
  """A PATH whose gcloud fails loudly: no test may reach a real cloud project."""
  bin_dir = tmp_path_factory.mktemp("no_gcloud")
  script = bin_dir / "gcloud"
  script.write_text("#!/usr/bin/env bash\necho 'a test called gcloud for real' >&2\nexit 97\n")
  script.chmod(script.stat().st_mode | stat.S_IEXEC)
  return f"{bin_dir}:{os.environ['PATH']}"


@pytest.fixture(autouse=True)
def _guard(monkeypatch, no_gcloud):
  monkeypatch.setenv("PATH", no_gcloud)


def tpu_vm(*args, env=None):
  full_env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")}
  full_env.pop("TFDS_DATA_DIR", None)
  return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True,
                        env={**full_env, **(env or {})}, timeout=60)


def dry_run(command, *args) -> list[list[str]]:
  """The commands a dry run prints, each split as the shell would."""
  r = tpu_vm(command, "--dry-run", *args)
  assert r.returncode == 0, r.stderr
  return [shlex.split(line) for line in r.stdout.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("args", [["--help"], ["create", "--help"], ["watch", "-h"]])
def test_help_describes_the_workflow(args):
  r = tpu_vm(*args)
  assert r.returncode == 0
  for word in ("create", "setup", "train", "logs", "watch", "delete", "--dry-run", "--spot"):
    assert word in r.stdout


@pytest.mark.parametrize("args, message", [
    ([], "Usage"),
    (["launch"], "unknown command 'launch'"),
    (["create", "--zone", "z"], "create needs --name (or $TPU_NAME)"),
    (["create", "--name", "n"], "create needs --zone (or $TPU_ZONE)"),
    (["create", *VM], "create needs --accelerator (or $TPU_ACCELERATOR)"),
    (["create", *VM, "--accelerator", "v9-8"], "no default --version for accelerator 'v9-8'"),
    (["create", *VM, "--accelerator", "v4-8", "--queued", "--preemptible"], "--spot, not"),
    (["train", *VM, "--workdir", "gs://b/r"], "train needs --config"),
    (["train", *VM, "--config", "configs/simclr_v2.py"], "train needs --workdir"),
    (["train", *VM, "--config", "configs/simclr_v2.py", "--workdir", "/tmp/run"],
     "--workdir must be a gs:// path"),
    (["train", *VM, "--config", "configs/nope.py", "--workdir", "gs://b/r"], "not found"),
    (["delete", *VM, "--force"], "unknown option '--force'"),
])
def test_missing_or_wrong_settings_are_refused_before_any_gcloud_call(args, message):
  r = tpu_vm(args[0], "--dry-run", *args[1:]) if args else tpu_vm()
  assert r.returncode == 2
  assert message in r.stderr
  assert "gcloud" not in r.stdout


def test_create_a_pod_slice_on_spot_capacity():
  (cmd,) = dry_run("create", *VM, "--accelerator", "v4-32", "--spot")
  assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "create", "ssl",
                 "--zone=us-central2-b", "--accelerator-type=v4-32",
                 "--version=tpu-ubuntu2204-base", "--spot"]


def test_create_through_a_queued_resource_with_settings_from_the_environment():
  r = tpu_vm("create", "--queued", "--dry-run", env={
      "TPU_NAME": "ssl", "TPU_ZONE": "us-east5-a", "TPU_PROJECT": "proj",
      "TPU_ACCELERATOR": "v5litepod-16"})
  assert r.returncode == 0, r.stderr
  assert shlex.split(r.stdout) == [
      "gcloud", "compute", "tpus", "queued-resources", "create", "ssl", "--zone=us-east5-a",
      "--project=proj", "--node-id=ssl", "--accelerator-type=v5litepod-16",
      "--runtime-version=v2-alpha-tpuv5-lite"]


def test_setup_installs_the_committed_tree_and_pinned_jax_on_every_worker():
  archive, scp, ssh = dry_run("setup", *VM)
  assert archive[:3] == ["git", "-C", ROOT] and archive[-1] == "HEAD"
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
  assert "--worker=all" in ssh
  with open(os.path.join(ROOT, "setup.py")) as f:
    pin = re.search(r'"jax==([0-9.]+)"', f.read()).group(1)
  assert f"'jax[tpu]=={pin}'" in ssh[-1] and "pip install" in ssh[-1]


def test_train_starts_the_same_command_on_every_worker_with_a_gcs_workdir():
  (ssh,) = dry_run("train", *VM, *RUN, "--data-dir", "gs://bucket/tfds",
                   "--", "--config.batch_size=1024", "--config.name=it's")
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "ssl"]
  assert "--worker=all" in ssh
  remote = shlex.split(ssh[-1].removeprefix("--command="))
  main = remote[remote.index("cvrl_jax.main") + 1:]
  assert main[:5] == ["--config=configs/simclr_v2.py", "--workdir=gs://bucket/simclr",
                      "--config.data_dir=gs://bucket/tfds", "--config.batch_size=1024",
                      "--config.name=it's"]


def test_logs_stream_worker_zero_and_delete_removes_the_vm():
  (logs,) = dry_run("logs", *VM)
  assert "--worker=0" in logs and logs[-1].startswith("--command=tail")
  assert dry_run("delete", *VM) == [["gcloud", "compute", "tpus", "tpu-vm", "delete", "ssl",
                                     "--zone=us-central2-b", "--quiet"]]
  assert dry_run("delete", *VM, "--queued")[0][3:5] == ["queued-resources", "delete"]


def test_watch_dry_run_shows_the_recovery_from_a_preemption():
  cmds = dry_run("watch", *VM, *RUN, "--accelerator", "v4-8", "--spot")
  verbs = [c[4] if c[0] == "gcloud" else c[0] for c in cmds]
  assert verbs == ["delete", "create", "git", "scp", "ssh", "ssh"]
  assert "--workdir=gs://bucket/simclr" in cmds[-1][-1]  # same workdir: it resumes


def _fake_gcloud(tmp_path, states: list[str], run_status: str):
  """A gcloud that logs its calls, reports ``states`` in turn, then READY."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (tmp_path / "states").write_text("\n".join(states) + "\n")
  script = bin_dir / "gcloud"
  script.write_text(f"""#!/usr/bin/env bash
printf '%s\\n' "$(printf '%q ' "$@")" >> {tmp_path}/calls
case "$4" in
  describe) s=$(head -n 1 {tmp_path}/states); sed -i 1d {tmp_path}/states
            echo "${{s:-READY}}" ;;
  ssh) [[ "$*" == *pgrep* ]] && echo {run_status} ;;
esac
exit 0
""")
  script.chmod(script.stat().st_mode | stat.S_IEXEC)
  return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "POLL_S": "0", "TMPDIR": str(tmp_path)}


def test_watch_recreates_a_preempted_vm_and_resumes_then_stops_when_done(tmp_path):
  env = _fake_gcloud(tmp_path, ["PREEMPTED", "READY"], "done:0")
  r = tpu_vm("watch", *VM, *RUN, "--accelerator", "v4-8", "--spot", env=env)
  assert r.returncode == 0, r.stderr
  assert "is PREEMPTED: recreating" in r.stderr and "Run finished" in r.stderr
  calls = [shlex.split(line) for line in (tmp_path / "calls").read_text().splitlines()]
  verbs = [c[3] for c in calls]
  assert verbs.count("delete") == 1 and verbs.count("create") == 1
  train_calls = [c for c in calls if "nohup" in c[-1]]
  assert len(train_calls) == 1 and "--worker=all" in train_calls[0]
  assert dry_run("train", *VM, *RUN)[0] == ["gcloud", *train_calls[0]]  # what dry runs print


def test_watch_stops_with_an_error_when_the_run_failed(tmp_path):
  env = _fake_gcloud(tmp_path, ["READY"], "done:1")
  r = tpu_vm("watch", *VM, *RUN, "--accelerator", "v4-8", env=env)
  assert r.returncode == 2 and "the run failed (exit 1)" in r.stderr


def test_checkpoints_of_a_gcs_workdir_stay_on_gcs():
  assert checkpoint.directory("gs://bucket/run") == "gs://bucket/run/checkpoints"
  assert checkpoint.directory("run") == os.path.join(os.getcwd(), "run", "checkpoints")


def test_metrics_are_written_through_tensorflows_file_systems():
  """metrics.jsonl goes through tf.io.gfile, as GCS does: here TF's in-memory ram://."""
  import tensorflow as tf
  path = "ram://cvrl_jax_test/run/metrics.jsonl"
  tf.io.gfile.makedirs(os.path.dirname(path))
  writer = loop.JsonlWriter(path)
  writer.write_scalars(1, {"loss": 2.5})
  writer.write_scalars(2, {"loss": 2.0})
  with tf.io.gfile.GFile(path) as f:
    assert [json.loads(line) for line in f] == [{"step": 1, "loss": 2.5},
                                                {"step": 2, "loss": 2.0}]
