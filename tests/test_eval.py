"""Evaluation runs: label fractions, restoring pre-trained encoders, losses, metrics,
and every task end to end on a tiny pre-training workdir (8 simulated devices)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
from helpers import read_metrics, restore, run_main, tiny_config

from configs import distill as distill_config
from configs import finetune as finetune_config
from configs import knn_eval as knn_config
from configs import linear_eval as linear_config
from conftest import SHARED_TFDS
from cvrl_jax import checkpoint, parallel, step as step_lib, train
from cvrl_jax.data import sources, subsets
from cvrl_jax.evaluation import classification, distill, finetune, knn, knn_eval, linear
from cvrl_jax.evaluation import pretrained as pretrained_lib


@pytest.fixture(scope="module")
def pretrain_dir(tmp_path_factory):
  """A 2-step SimCLR v2 run of a tiny ResNet on 16 px CIFAR-10 (checkpoints 1 and 2)."""
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  config = tiny_config(total_steps=2, checkpoint_every_steps=1)
  train.train_and_evaluate(config, workdir)
  return workdir


def tiny(config, pretrain_dir, **overrides):
  config.pretrained = pretrain_dir
  config.data_dir = SHARED_TFDS
  config.batch_size = 16
  config.eval_batch_size = 32
  config.num_train_examples = 256
  config.num_eval_examples = 64
  config.total_steps = 3
  config.log_every_steps = 1
  for k, v in overrides.items():
    config[k] = v
  return config


def digits_like_folder(root, classes=3, train=8, test=4, size=16):
  """A tiny image folder of coloured squares: class c is colour c (learnable)."""
  rng = np.random.default_rng(0)
  for split, n in (("train", train), ("test", test)):
    for c in range(classes):
      os.makedirs(root / split / f"class{c}")
      for i in range(n):
        image = np.zeros((size, size, 3), np.uint8)
        image[..., c % 3] = 200
        image = np.clip(image + rng.integers(0, 40, image.shape), 0, 255).astype(np.uint8)
        tf.io.write_file(str(root / split / f"class{c}" / f"{i}.png"), tf.io.encode_png(image))
  return str(root)


# --- Label fractions -------------------------------------------------------------------


def test_class_balanced_fraction_is_balanced_deterministic_and_nested():
  labels = np.repeat(np.arange(10), [100, 120, 80, 100, 100, 100, 100, 100, 100, 100])
  small = subsets.class_balanced_fraction(labels, 0.05, seed=0)
  assert np.all(np.bincount(labels[small]) == 5)  # round(0.05 * 1000 / 10)
  assert np.array_equal(small, subsets.class_balanced_fraction(labels, 0.05, seed=0))
  assert np.all(np.diff(small) > 0)  # sorted, no repeats
  large = subsets.class_balanced_fraction(labels, 0.2, seed=0)
  assert np.all(np.bincount(labels[large]) == 20)
  assert set(small) <= set(large)  # 5% of the labels are among the 20%
  other = subsets.class_balanced_fraction(labels, 0.05, seed=1)
  assert not np.array_equal(small, other)
  assert np.array_equal(subsets.class_balanced_fraction(labels, 1.0, 0), np.arange(1000))
  with pytest.raises(ValueError, match="label_fraction=0"):
    subsets.class_balanced_fraction(labels, 0.0, 0)


def test_fraction_of_cifar10_is_listed_in_the_workdir(tmp_path):
  config = tiny(finetune_config.get_config("cpu_10pct"), "", num_train_examples=1000,
                dataset="cifar10", train_split="train")
  indices, n = classification.labelled_subset(config, str(tmp_path))
  assert n == len(indices) == 100
  labels, ids = sources.read_labels(config, "train")
  assert np.all(np.bincount(labels[indices], minlength=10) == 10)
  with open(tmp_path / "labelled_examples.csv") as f:
    rows = f.read().splitlines()
  assert rows[0] == "index,id,label" and len(rows) == 101
  first = rows[1].split(",")
  assert int(first[0]) == indices[0] and first[1] == ids[indices[0]]
  assert first[1].startswith("train_") and int(first[2]) == labels[indices[0]]
  again, _ = classification.labelled_subset(config, str(tmp_path / "again"))
  assert np.array_equal(indices, again)


# --- Restoring pre-trained encoders ------------------------------------------------------


def test_restores_the_encoder_of_the_chosen_step(pretrain_dir):
  mesh = parallel.make_mesh()
  latest = pretrained_lib.load_pretrained(pretrain_dir, -1, mesh)
  assert latest.step == 2 and set(latest.params) == {"encoder", "head"}
  saved = restore(pretrain_dir, 2)["params"]
  for a, b in zip(jax.tree.leaves(latest.params["encoder"]),
                  jax.tree.leaves(saved["encoder"])):
    np.testing.assert_array_equal(a, b)
  first = pretrained_lib.load_pretrained(pretrain_dir, 1, mesh)
  assert first.step == 1
  init = pretrained_lib.load_pretrained(pretrain_dir, 0, mesh)  # the random-init baseline
  assert init.step == 0
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(init.params["encoder"]),
                                                 jax.tree.leaves(latest.params["encoder"]))]
  assert any(moved)


def test_missing_or_empty_pretrained_workdir_is_named(tmp_path, pretrain_dir):
  mesh = parallel.make_mesh()
  with pytest.raises(checkpoint.RunNotFoundError,
                     match="No pre-training run at .*nowhere.*config.json"):
    pretrained_lib.load_pretrained(str(tmp_path / "nowhere"), -1, mesh)
  (tmp_path / "empty").mkdir()
  with open(tmp_path / "empty" / "config.json", "w") as f:
    with open(os.path.join(pretrain_dir, "config.json")) as g:
      f.write(g.read())
  with pytest.raises(checkpoint.RunNotFoundError, match="has no checkpoints"):
    pretrained_lib.load_pretrained(str(tmp_path / "empty"), -1, mesh)
  with pytest.raises(checkpoint.RunNotFoundError,
                     match="No checkpoint at step 7 .*steps \\[1, 2\\]"):
    pretrained_lib.load_pretrained(pretrain_dir, 7, mesh)


def test_head_layer_that_does_not_exist_is_refused(pretrain_dir):
  pre = pretrained_lib.load_pretrained(pretrain_dir, -1, parallel.make_mesh(1))
  spec = pretrained_lib.network_spec(pre.config, 2, 10, pre.params["head"])
  assert spec["head_dims"] == [32, 32] and spec["head_bn"]  # SimCLR v2's 3-layer head
  with pytest.raises(ValueError, match="representation_layer=3 needs a projection head.*"
                                       "MLP head of 3 layers"):
    pretrained_lib.network_spec(pre.config, 3, 10, pre.params["head"])
  swav_head = {"projector": {}, "prototypes": {}}
  with pytest.raises(ValueError, match="projector, prototypes head, not an MLP"):
    pretrained_lib.network_spec(pre.config, 1, 10, swav_head)


# --- Losses and metrics ---------------------------------------------------------------


def test_distillation_loss_hand_worked():
  teacher = jnp.array([[2.0, 0.0], [0.0, 0.0]])
  student = jnp.array([[1.0, 1.0], [3.0, 1.0]])
  # tau = 2: teacher probabilities softmax([1, 0]) = [e/(e+1), 1/(e+1)] and [1/2, 1/2];
  # student log-probabilities log softmax([.5, .5]) = log 1/2, log softmax([1.5, .5]).
  e = np.e
  p = [e / (e + 1), 1 / (e + 1)]
  expect0 = -(p[0] * np.log(0.5) + p[1] * np.log(0.5))
  expect1 = -(0.5 * np.log(e / (e + 1)) + 0.5 * np.log(1 / (e + 1)))
  got = distill.distillation_loss(student, teacher, temperature=2.0)
  np.testing.assert_allclose(got, [expect0, expect1], rtol=1e-6)
  # The teacher gets no gradient; the student's is (p_S - p_T) / tau.
  g_t = jax.grad(lambda t: distill.distillation_loss(student, t, 2.0).sum())(teacher)
  np.testing.assert_array_equal(g_t, 0.0)
  g_s = jax.grad(lambda s: distill.distillation_loss(s, teacher, 2.0).sum())(student)
  np.testing.assert_allclose(g_s[0], (np.array([0.5, 0.5]) - p) / 2.0, rtol=1e-6)


def test_masked_mean_counts_only_labelled_rows():
  x, mask = jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([1.0, 0.0, 1.0, 0.0])
  assert float(distill.masked_mean(x, mask, None)) == pytest.approx(2.0)
  assert float(distill.masked_mean(x, jnp.zeros(4), None)) == 0.0


def test_top5_and_exact_evaluation_with_padding():
  logits = jnp.array([[0, 1, 2, 3, 4, 5, 6.0],   # label 0: last of 7 -> not in top-5
                      [6, 5, 4, 3, 2, 1, 0.0],   # label 4: 5th -> top-5, not top-1
                      [0, 0, 9, 0, 0, 0, 0.0],   # label 2: top-1
                      [9, 0, 0, 0, 0, 0, 0.0]])  # padding (label -1)
  labels = jnp.array([0, 4, 2, -1])
  np.testing.assert_array_equal(classification.topk_correct(logits, labels, 5), [0, 1, 1, 0])
  np.testing.assert_array_equal(classification.topk_correct(logits, labels, 1), [0, 0, 1, 0])
  # Fewer than 5 classes: every label is in the "top 5".
  np.testing.assert_array_equal(
      classification.topk_correct(jnp.zeros((2, 3)), jnp.array([2, 0]), 5), [1, 1])
  assert float(classification.cross_entropy(logits, labels)[3]) == 0.0

  class Fixed:
    def eval_logits(self, params, batch_stats, extra, batch):
      return batch["features"]

  mesh = parallel.make_mesh(2)
  step = classification.make_eval_step(Fixed())
  batches = [{"features": np.asarray(logits[:2]), "label": np.asarray(labels[:2]),
              "mask": np.ones(2, np.float32)},
             {"features": np.asarray(logits[2:]), "label": np.asarray(labels[2:]),
              "mask": np.array([1, 0], np.float32)}]
  state = step_lib.TrainState(step=0, params={}, batch_stats={}, opt_state={}, extra={})
  result = classification.evaluate(step, state, iter(batches), mesh)
  assert result["eval_count"] == 3
  assert result["eval_top1"] == pytest.approx(100 / 3)
  assert result["eval_top5"] == pytest.approx(200 / 3)


# --- Each task end to end ----------------------------------------------------------------


def test_linear_eval_trains_only_the_classifier(pretrain_dir, tmp_path):
  config = tiny(linear_config.get_config("simclr"), pretrain_dir)
  result = linear.train_and_evaluate(config, str(tmp_path))
  assert 0 <= result["eval_top1"] <= result["eval_top5"] <= 100
  assert result["eval_count"] == 64
  state = restore(str(tmp_path), 3)
  assert set(state["params"]) == {"classifier"}
  assert np.abs(state["params"]["classifier"]["kernel"]).sum() > 0  # it trained
  pre = restore(pretrain_dir, 2)["params"]
  for a, b in zip(jax.tree.leaves(state["extra"]["params"]["encoder"]),
                  jax.tree.leaves(pre["encoder"])):
    np.testing.assert_array_equal(a, b)  # frozen: bit for bit the pre-trained encoder
  pre_stats = state["extra"]["batch_stats"]["encoder"]
  saved_stats = restore(pretrain_dir, 2)["batch_stats"]["encoder"]
  for a, b in zip(jax.tree.leaves(pre_stats), jax.tree.leaves(saved_stats)):
    np.testing.assert_array_equal(a, b)  # inference mode: BN statistics untouched
  rows = read_metrics(tmp_path)
  assert [r["step"] for r in rows if "eval_top1" in r] == [3]
  assert "eval_top5" in rows[-1] and "loss" in rows[-2]
  with open(tmp_path / "summary.txt") as f:
    assert "top-1" in f.read()
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["network"]["frozen_backbone"]


def test_linear_eval_on_cached_features_and_head_layer(pretrain_dir, tmp_path):
  config = tiny(linear_config.get_config("cpu"), pretrain_dir, representation_layer=1,
                batch_size=32, total_steps=0, num_epochs=2.0)
  result = linear.train_and_evaluate(config, str(tmp_path))
  assert result["eval_count"] == 64
  assert [r["step"] for r in read_metrics(tmp_path) if "eval_top1" in r] == [16]


def test_finetune_on_a_fraction_then_distill(pretrain_dir, tmp_path):
  config = tiny(finetune_config.get_config("cpu_10pct"), pretrain_dir,
                num_train_examples=640)  # 60 labelled images, 6 per class
  result = finetune.train_and_evaluate(config, str(tmp_path / "ft"))
  assert 0 <= result["eval_top1"] <= result["eval_top5"] <= 100
  assert os.path.exists(tmp_path / "ft" / "labelled_examples.csv")
  state = restore(str(tmp_path / "ft"), 3)
  assert set(state["params"]) == {"encoder", "head", "classifier"}
  assert set(state["params"]["head"]) == {"dense_0", "bn_0"}  # from the head's 1st layer
  pre = restore(pretrain_dir, 2)["params"]
  changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state["params"]["encoder"]),
                                                   jax.tree.leaves(pre["encoder"]))]
  assert any(changed)  # fine-tuned, not frozen

  dconfig = tiny(distill_config.get_config("cpu"), pretrain_dir)
  del dconfig.pretrained
  dconfig.teacher = str(tmp_path / "ft")
  dconfig.student.width_multiplier = 0.0625  # smaller than the teacher
  dconfig.distill.alpha = 0.5
  dconfig.label_fraction = 0.1
  result = distill.train_and_evaluate(dconfig, str(tmp_path / "distill"))
  assert 0 <= result["eval_top1"] <= 100
  assert {"distill_loss", "labelled_loss", "teacher_agreement"} <= set(result)
  with open(tmp_path / "distill" / "config.json") as f:
    net = json.load(f)["network"]
  assert net["model"]["width_multiplier"] == 0.0625 and net["head_dims"] == []


def test_distill_refuses_a_dataset_the_teacher_does_not_classify(pretrain_dir, tmp_path):
  folder = digits_like_folder(tmp_path / "folder")
  config = tiny(finetune_config.get_config("cpu_10pct"), pretrain_dir, dataset="image_folder",
                data_dir=folder, label_fraction=1.0, num_train_examples=0, batch_size=8,
                num_eval_examples=0, eval_batch_size=8, total_steps=1)
  finetune.train_and_evaluate(config, str(tmp_path / "ft"))
  dconfig = tiny(distill_config.get_config("cpu"), pretrain_dir, dataset="cifar10")
  del dconfig.pretrained
  dconfig.teacher = str(tmp_path / "ft")
  with pytest.raises(ValueError, match="classifies 3 classes but cifar10 has 10"):
    distill.train_and_evaluate(dconfig, str(tmp_path / "distill"))


def test_transfer_to_an_image_folder(pretrain_dir, tmp_path):
  folder = digits_like_folder(tmp_path / "folder")
  config = tiny(linear_config.get_config("cpu"), pretrain_dir, dataset="image_folder",
                data_dir=folder, num_train_examples=0, num_eval_examples=0, batch_size=8,
                eval_batch_size=8, total_steps=40)
  config.optimizer.update(base_lr=1.0, lr_scaling="none")
  result = linear.train_and_evaluate(config, str(tmp_path / "lin"))
  assert result["eval_count"] == 12
  assert result["eval_top1"] > 60  # colours are linearly separable


def test_knn_run_matches_the_monitor(pretrain_dir, tmp_path):
  config = tiny(knn_config.get_config("cpu"), pretrain_dir)
  config.knn.update(num_train_examples=256, num_eval_examples=64, batch_size=64)
  result = knn_eval.train_and_evaluate(config, str(tmp_path))
  mesh = parallel.make_mesh()
  pre_config = checkpoint.read_config(pretrain_dir)
  pre_config.data_dir = SHARED_TFDS
  pre_config.knn.update(num_train_examples=256, num_eval_examples=64, batch_size=64)
  method_state = step_lib.TrainState(step=0, params=restore(pretrain_dir, 2)["params"], opt_state={},
                                  batch_stats=restore(pretrain_dir, 2)["batch_stats"],
                                  extra={})
  from cvrl_jax import methods
  method = methods.get_method(pre_config, 10, 2)
  monitor = knn.monitor(pre_config, knn.method_features(method), method_state, mesh, 10)
  assert result["knn_top1"] == pytest.approx(monitor)
  assert read_metrics(tmp_path) == [{"step": 2, "knn_top1": result["knn_top1"]}]


# --- Clear errors --------------------------------------------------------------------------


def test_unknown_or_unprepared_dataset_is_named(pretrain_dir, tmp_path):
  config = tiny(linear_config.get_config("cpu"), pretrain_dir, dataset="cifar100")
  with pytest.raises(sources.DatasetNotFoundError, match="tfds build cifar100"):
    linear.train_and_evaluate(config, str(tmp_path / "a"))
  config = tiny(linear_config.get_config("cpu"), pretrain_dir, eval_split="validation")
  with pytest.raises(ValueError, match="cifar10 has no split 'validation'.*'test', 'train'"):
    linear.train_and_evaluate(config, str(tmp_path / "b"))


def test_missing_pretrained_workdir_from_the_command_line(tmp_path):
  r = run_main("--config=configs/linear_eval.py:cpu", f"--workdir={tmp_path / 'wd'}",
               f"--config.pretrained={tmp_path / 'missing'}")
  assert r.returncode != 0
  assert "No pre-training run at" in r.stderr and "--config.pretrained" in r.stderr


def test_digits_folder_is_a_stratified_image_folder(tmp_path):
  pytest.importorskip("sklearn", reason="the digits come from scikit-learn: "
                      "pip install -e '.[test]'")
  from sklearn.datasets import load_digits
  from cvrl_jax.tools import digits_folder
  counts = digits_folder.write_digits(str(tmp_path), size=16)
  per_class = np.bincount(load_digits().target)
  test = int((per_class // 5).sum())  # every 5th image of each class
  assert counts == {"train": 1797 - test, "test": test}
  assert len(os.listdir(tmp_path / "test" / "0")) == per_class[0] // 5
  assert sorted(os.listdir(tmp_path / "test")) == [str(d) for d in range(10)]
  image = tf.io.decode_png(tf.io.read_file(str(next((tmp_path / "train" / "3").iterdir()))))
  assert image.shape == (16, 16, 3) and int(tf.reduce_max(image)) > 128


# One method per kind of extra state (SimCLR's own runs are the fixture above; Barlow
# Twins, SimSiam, SupCon and VICReg keep the same parameter trees as SimCLR or BYOL;
# InstDisc's memory bank is one row per training image; CMC's encoder is two ResNets,
# CPC's a LayerNorm ResNet over a patch grid, without BatchNorm statistics or head).
@pytest.mark.parametrize("name", ["moco_v1", "moco_v3", "byol", "swav", "dino", "nnclr",
                                  "instdisc", "cmc", "cpc"])
def test_every_methods_checkpoint_feeds_the_evaluations(tmp_path, name):
  """A checkpoint as train.py writes it: its encoder is what the evaluations
  restore, and the classifier they build runs on it."""
  import importlib

  import optax
  from cvrl_jax import methods
  config = importlib.import_module(f"configs.{name}").get_config("cpu")
  config.model.width_multiplier = 0.125
  config.update(image_size=16, data_dir=SHARED_TFDS)  # InstDisc's bank: a row per image
  if name == "cpc":
    config.cpc.offsets = (1, 2)  # 16 px: a grid of 3 rows
  mesh = parallel.make_mesh(1)
  method = methods.get_method(config, 10, 10)
  state = step_lib.create_train_state(method, optax.sgd(0.1), jax.random.PRNGKey(3),
                                   (2, 16, 16, 3), mesh)
  workdir = str(tmp_path)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort())
  with ocp.CheckpointManager(checkpoint.directory(workdir)) as mngr:
    mngr.save(5, args=ocp.args.StandardSave(state))
  loaded = pretrained_lib.load_pretrained(workdir, -1, mesh)
  assert loaded.step == 5
  for a, b in zip(jax.tree.leaves(loaded.params["encoder"]),
                  jax.tree.leaves(state.params["encoder"])):
    np.testing.assert_array_equal(a, b)
  spec = pretrained_lib.network_spec(loaded.config, 0, 10, loaded.params.get("head", {}))
  net = pretrained_lib.build_classifier(spec, None)
  images = jnp.ones((2, 16, 16, 3))
  variables = pretrained_lib.backbone_variables(loaded, spec)
  variables["params"]["classifier"] = net.init(jax.random.PRNGKey(0), images,
                                               train=False)["params"]["classifier"]
  logits = net.apply(variables, images, train=False)
  assert logits.shape == (2, 10) and bool(jnp.isfinite(logits).all())
