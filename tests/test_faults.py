"""Faults injected, and what survives them (the README's "What survives what")."""

import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import fake_workdir, losses_by_step, preempted_run, read_metrics, tiny_config

from cvrl_jax import checkpoint, loop, parallel, train
from cvrl_jax.data import sources
from cvrl_jax.evaluation import pretrained as pretrained_lib
from cvrl_jax.tools import export


def _truncate_arrays(step_dir):
  """Cuts every array file of a checkpoint in half: a VM taken away mid-write."""
  cut = 0
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      if "/d/" in path + "/" and not name.startswith("_"):
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
        cut += 1
  assert cut, f"no array files under {step_dir}"


def _steps(workdir):
  return ocp.CheckpointManager(checkpoint.directory(str(workdir))).all_steps()


RESUME_CONFIG = dict(num_devices=2, total_steps=6, checkpoint_every_steps=2)


@pytest.fixture(scope="module")
def straight_and_preempted(tmp_path_factory):
  """An uninterrupted run's losses, and a run preempted after saving steps 2 and 4."""
  config, root = tiny_config(**RESUME_CONFIG), tmp_path_factory.mktemp("resume")
  train.train_and_evaluate(config, str(root / "straight"))
  with pytest.MonkeyPatch.context() as monkeypatch:
    preempted_run(config, str(root / "preempted"), monkeypatch, steps=4)
  assert _steps(root / "preempted") == [2, 4]
  return losses_by_step(root / "straight"), root / "preempted"


@pytest.mark.parametrize("fault", ["truncated", "deleted", "empty"])
def test_resume_skips_a_partial_latest_checkpoint(tmp_path, caplog, straight_and_preempted,
                                                  fault):
  straight, preempted = straight_and_preempted
  partial = tmp_path / "partial"
  shutil.copytree(preempted, partial)
  step4 = partial / "checkpoints" / "4"
  if fault == "truncated":
    _truncate_arrays(step4)
  elif fault == "deleted":
    shutil.rmtree(step4 / "default")
  else:
    shutil.rmtree(step4)
    step4.mkdir()
  caplog.set_level("WARNING")
  train.train_and_evaluate(tiny_config(**RESUME_CONFIG), str(partial))

  assert any("step 4" in r.getMessage() and "does not read" in r.getMessage()
             for r in caplog.records)
  kept = os.listdir(partial / checkpoint.UNREADABLE)
  assert len(kept) == 1 and kept[0].startswith("4-")  # moved aside, not deleted
  assert _steps(partial) == [2, 4, 6]  # steps 3-6 ran again from step 2
  resumed = losses_by_step(partial)
  for step in (3, 4, 5, 6):
    assert resumed[step] == pytest.approx(straight[step], rel=1e-6), step


def test_evaluations_and_export_read_the_newest_checkpoint_that_reads(tmp_path, caplog):
  workdir, _, state = fake_workdir(tmp_path)
  with checkpoint.manager(workdir, 3) as mngr:
    mngr.save(7, args=ocp.args.StandardSave(state.replace(step=state.step + 2)))
  _truncate_arrays(os.path.join(checkpoint.directory(workdir), "7"))
  caplog.set_level("WARNING")
  run = export.restore_run(workdir)
  assert run.step == 5
  assert any("step 7" in r.getMessage() for r in caplog.records)
  np.testing.assert_array_equal(run.params["encoder"]["stem_conv"]["kernel"],
                                np.asarray(state.params["encoder"]["stem_conv"]["kernel"]))
  loaded = pretrained_lib.load_pretrained(workdir, checkpoint.LATEST, parallel.make_mesh(1))
  assert loaded.step == 5
  np.testing.assert_array_equal(loaded.params["encoder"]["stem_conv"]["kernel"],
                                run.params["encoder"]["stem_conv"]["kernel"])
  assert _steps(workdir) == [5, 7]  # a reader moves nothing


def test_a_failed_metrics_write_is_named_and_keeps_the_checkpoints(tmp_path, monkeypatch):
  """A fault-injecting writer: metrics.jsonl's first write at step 4 finds the disk full."""
  import errno
  write = loop.JsonlWriter.write_scalars

  def full_disk(self, step, scalars):
    if step >= 4:
      raise OSError(errno.ENOSPC, "No space left on device", self._path)
    return write(self, step, scalars)

  monkeypatch.setattr(loop.JsonlWriter, "write_scalars", full_disk)
  config = tiny_config(num_devices=2, total_steps=6, checkpoint_every_steps=2)
  with pytest.raises(RuntimeError, match=r"(?s)Writing metrics in .* failed: OSError: \[Errno "
                                         r"28\] No space left.*metrics.jsonl.*steps \[2\]\) are intact"):
    train.train_and_evaluate(config, str(tmp_path))
  assert export.restore_run(str(tmp_path)).step == 2


def test_a_workdir_that_cannot_be_created_is_named(tmp_path):
  (tmp_path / "a_file").write_text("not a folder")
  with pytest.raises(RuntimeError, match="Writing the workdir in .*a_file/run failed:"):
    train.train_and_evaluate(tiny_config(), str(tmp_path / "a_file" / "run"))


def test_no_readable_checkpoint_is_a_clear_error_and_moves_nothing(tmp_path):
  config = tiny_config(num_devices=1, total_steps=2, checkpoint_every_steps=1)
  train.train_and_evaluate(config, str(tmp_path))
  for step in _steps(tmp_path):
    _truncate_arrays(tmp_path / "checkpoints" / str(step))
  with pytest.raises(RuntimeError, match="(?s)Cannot read the checkpoint at step 2.*nor any "
                                         "older one.*step 1"):
    train.train_and_evaluate(config, str(tmp_path))
  assert _steps(tmp_path) == [1, 2] and not (tmp_path / checkpoint.UNREADABLE).exists()


# --- A full disk: a real size-limited file system (tmpfs) in a private mount namespace ---

def _disk_full_run(workdir: str, result_path: str) -> None:
  """(Run as a script inside the namespace.) Trains until the disk is full, then
  checks what is left on it and writes what it found to ``result_path``."""
  import json
  config = tiny_config(num_devices=2, total_steps=40, checkpoint_every_steps=1)
  config.max_to_keep = 100
  found = {}
  try:
    train.train_and_evaluate(config, workdir)
  except RuntimeError as e:
    found["error"] = str(e)
  steps = checkpoint.steps_on_disk(workdir)
  found["steps"] = steps
  found["readable"] = [export.restore_run(workdir, s).step for s in steps]
  with open(result_path, "w") as f:
    json.dump(found, f)


def _one_checkpoint_kb(tmp_path) -> int:
  train.train_and_evaluate(tiny_config(num_devices=2, total_steps=1), str(tmp_path / "size"))
  step_dir = tmp_path / "size" / "checkpoints" / "1"
  return sum(f.stat().st_size for f in step_dir.rglob("*") if f.is_file()) // 1024


def test_a_full_disk_is_named_and_the_checkpoints_before_it_stay_readable(tmp_path):
  import json
  import subprocess
  import sys
  if not shutil.which("unshare"):
    pytest.skip("needs unshare(1) for a private tmpfs")
  size_kb = int(_one_checkpoint_kb(tmp_path) * 2.5) + 256  # room for two checkpoints
  mount, result = tmp_path / "small_disk", tmp_path / "result.json"
  mount.mkdir()
  script = (f"mount -t tmpfs -o size={size_kb}k tmpfs {mount} && "
            f"exec {sys.executable} {__file__} {mount}/run {result}")
  ns = ["-m"] if os.geteuid() == 0 else ["-r", "-m"]
  proc = subprocess.run(["unshare", *ns, "sh", "-c", script], cwd=os.path.dirname(__file__),
                        capture_output=True, text=True, timeout=600,
                        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(
                            os.path.abspath(__file__)))})
  if "mount" in proc.stderr and not result.exists():
    pytest.skip(f"cannot mount a tmpfs here: {proc.stderr[-300:]}")
  assert result.exists(), proc.stderr[-3000:]
  found = json.loads(result.read_text())
  assert found["error"].startswith("Writing checkpoints (at step ")
  assert "No space left on device" in found["error"]
  assert f"{mount}/run" in found["error"] and "rerun the same command" in found["error"]
  assert len(found["steps"]) >= 1 and found["readable"] == found["steps"]


if __name__ == "__main__":
  import sys
  _disk_full_run(sys.argv[1], sys.argv[2])


def _image_folder(root, per_class=12):
  """root/{train,test}/{cat,dog}/*.jpg|png of random pixels."""
  import tensorflow as tf
  for split, n in (("train", per_class), ("test", 4)):
    for label in ("cat", "dog"):
      (root / split / label).mkdir(parents=True)
      for i in range(n):
        img = np.random.default_rng(i).integers(0, 255, (20, 24, 3), np.uint8)
        data = tf.io.encode_png(img) if i % 2 else tf.io.encode_jpeg(img)
        tf.io.write_file(str(root / split / label / f"{i}.{'png' if i % 2 else 'jpg'}"), data)
  return root


def _spoil(root):
  """A truncated JPEG, a zero-byte file and a text file with an image extension."""
  jpeg = root / "train" / "cat" / "0.jpg"
  jpeg.write_bytes(jpeg.read_bytes()[:len(jpeg.read_bytes()) // 2])
  (root / "train" / "dog" / "empty.jpg").write_bytes(b"")
  (root / "train" / "dog" / "notes.png").write_text("not an image\n" * 20)
  return [str(jpeg), str(root / "train" / "dog" / "empty.jpg"),
          str(root / "train" / "dog" / "notes.png")]


def _folder_config(root, **overrides):
  return tiny_config(dataset="image_folder", data_dir=str(root), num_train_examples=0,
                     total_steps=2, **overrides)


def test_an_image_folder_reads_as_tfds_image_folder_does(tmp_path):
  """Same files, order, labels and pixels as tfds.ImageFolder (which we replaced to
  check every file before reading)."""
  import tensorflow_datasets as tfds
  root = _image_folder(tmp_path / "images")
  theirs = list(tfds.as_numpy(tfds.ImageFolder(str(root)).as_dataset(split="train",
                                                                       shuffle_files=False)))
  config = _folder_config(root)
  ours = list(tfds.as_numpy(sources.image_folder(config, "train")))
  paths, _ = sources.image_folder_files(config, "train")
  assert [t["image/filename"].decode() for t in theirs] == list(paths)
  assert [t["label"] for t in theirs] == [o["label"] for o in ours]
  for t, o in zip(theirs, ours):
    np.testing.assert_array_equal(t["image"], o["image"])
  assert sources.num_examples(config, "train") == 24


def test_bad_images_stop_the_run_naming_each_file(tmp_path):
  root = _image_folder(tmp_path / "images")
  bad = _spoil(root)
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(_folder_config(root), str(tmp_path / "run"))
  message = str(e.value)
  assert "3 of the 26 files" in message and "--config.skip_bad_images=True" in message
  for path, why in zip(bad, ("a truncated JPEG", "an empty file", "not a JPEG or PNG")):
    assert f"{path}: {why}" in message
  assert not _steps(tmp_path / "run")  # stopped before any step


def test_skip_bad_images_leaves_them_out_and_counts_them(tmp_path, caplog):
  root = _image_folder(tmp_path / "images")
  bad = _spoil(root)
  caplog.set_level("WARNING")
  train.train_and_evaluate(_folder_config(root, skip_bad_images=True), str(tmp_path / "run"))
  rows = read_metrics(tmp_path / "run")
  assert [r["bad_images_skipped"] for r in rows if "bad_images_skipped" in r] == [3]
  assert max(r["step"] for r in rows) == 2
  for path in bad:
    assert any(path in r.getMessage() for r in caplog.records)
  config = _folder_config(root, skip_bad_images=True)
  assert sources.num_examples(config, "train") == 23 and not set(bad) & set(
      sources.image_folder_files(config, "train")[0])
