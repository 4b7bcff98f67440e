"""The training loop end to end on real CIFAR-10 (tiny model, a few steps)."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import SHARED_TFDS
from helpers import losses_by_step, preempted_run, restore, tiny_config
from cvrl_jax import parallel, train
from cvrl_jax.data import sources


def test_one_and_eight_devices_give_the_same_losses(tmp_path):
  """Global NT-Xent + global BatchNorm: splitting the batch changes nothing."""
  assert jax.device_count() == 8
  one = train.train_and_evaluate(tiny_config(num_devices=1), str(tmp_path / "one"))
  eight = train.train_and_evaluate(tiny_config(num_devices=8), str(tmp_path / "eight"))
  l1, l8 = losses_by_step(tmp_path / "one"), losses_by_step(tmp_path / "eight")
  assert sorted(l1) == [1, 2, 3, 4]
  assert l1[1] > 0 and l1 != pytest.approx({k: 0.0 for k in l1})
  for step in l1:
    assert l8[step] == pytest.approx(l1[step], rel=2e-4), step
  assert eight["probe_top1"] == pytest.approx(one["probe_top1"], abs=1e-3)
  assert eight["knn_top1"] == pytest.approx(one["knn_top1"], abs=2.0)
  p1, p8 = restore(tmp_path / "one", 4)["params"], restore(tmp_path / "eight", 4)["params"]
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_stopped_and_resumed_run_equals_uninterrupted(tmp_path, monkeypatch):
  """SIGTERM after step 2 saves a checkpoint; a rerun continues to the same end."""
  config = tiny_config(num_devices=8)
  train.train_and_evaluate(config, str(tmp_path / "straight"))

  preempted_run(config, str(tmp_path / "resumed"), monkeypatch, steps=2)
  assert ocp.CheckpointManager(str(tmp_path / "resumed" / "checkpoints")).all_steps() == [2]
  assert max(losses_by_step(tmp_path / "resumed")) == 2
  train.train_and_evaluate(config, str(tmp_path / "resumed"))

  straight, resumed = losses_by_step(tmp_path / "straight"), losses_by_step(tmp_path / "resumed")
  assert sorted(resumed) == [1, 2, 3, 4]
  for step in straight:
    assert resumed[step] == pytest.approx(straight[step], rel=1e-6), step
  for a, b in zip(jax.tree.leaves(restore(tmp_path / "straight", 4)["params"]),
                  jax.tree.leaves(restore(tmp_path / "resumed", 4)["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  config = tiny_config(num_devices=2, checkpoint_every_steps=2, log_every_steps=2,
                       total_steps=6)
  to_global, calls = parallel.host_to_global, []

  def poisoned(batch, mesh):
    calls.append(1)
    if len(calls) == 3:  # the third step sees NaN images
      batch = {**batch, "views": tuple(np.full_like(v, np.nan) for v in batch["views"])}
    return to_global(batch, mesh)

  monkeypatch.setattr(parallel, "host_to_global", poisoned)
  with pytest.raises(FloatingPointError, match="NaN.*last good checkpoint \\(step 2\\)"):
    train.train_and_evaluate(config, str(tmp_path))
  assert ocp.CheckpointManager(str(tmp_path / "checkpoints")).all_steps() == [2]
  params = restore(tmp_path, 2)["params"]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_batch_that_does_not_split_over_devices_is_refused(tmp_path):
  with pytest.raises(ValueError, match="does not divide over 8 devices.*batch_size=16"):
    train.train_and_evaluate(tiny_config(batch_size=20, num_devices=8), str(tmp_path))


def test_missing_dataset_says_how_to_get_it(tmp_path):
  config = tiny_config(data_dir=str(tmp_path / "empty"))
  with pytest.raises(sources.DatasetNotFoundError,
                     match="(?s)tfds build cifar10.*--config.data_dir"):
    train.train_and_evaluate(config, str(tmp_path / "wd"))


def test_unreadable_checkpoint_gives_clear_error(tmp_path):
  config = tiny_config(num_devices=1, total_steps=1)
  train.train_and_evaluate(config, str(tmp_path))
  ckpt = tmp_path / "checkpoints" / "1"
  for root, _, files in os.walk(ckpt):
    for name in files:
      if not name.startswith("_"):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
  with pytest.raises(RuntimeError, match="Cannot read the checkpoint at step 1"):
    train.train_and_evaluate(config.copy_and_resolve_references(), str(tmp_path))


def test_corrupt_data_file_is_named_with_the_fix(tmp_path):
  """Garbage in the middle of the train tfrecord: a clear error, not a TF trace."""
  import shutil
  src = os.path.join(SHARED_TFDS, "cifar10", "3.0.2")
  dst = tmp_path / "tfds" / "cifar10" / "3.0.2"
  shutil.copytree(src, dst)
  train_file = dst / "cifar10-train.tfrecord-00000-of-00001"
  os.chmod(train_file, 0o644)
  with open(train_file, "r+b") as f:
    f.seek(20_000)
    f.write(b"\xff" * 4096)
  config = tiny_config(data_dir=str(tmp_path / "tfds"), num_devices=1)
  with pytest.raises(RuntimeError, match="(?s)Reading cifar10 failed.*corrupt.*tfds build"):
    train.train_and_evaluate(config, str(tmp_path / "wd"))
