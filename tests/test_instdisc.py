"""InstDisc: NCE, Z, the full softmax, the proximal term and the bank update by
hand on a tiny bank; each example's index from the pipeline (also per process);
tiny runs on real CIFAR-10: 1 vs 8 devices, the bank after training, stop and
resume, the kNN monitor; the presets."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import instdisc as instdisc_config, simclr_v2
from conftest import SHARED_TFDS
from cvrl_jax import config as config_lib, methods, optim, parallel, step as step_lib, train
from cvrl_jax.data import pipeline, sources
from cvrl_jax.methods import base, instdisc
from helpers import (assert_trees_close, loop_run, losses_by_step, on_mesh, preempted_run,
                     read_metrics, restore, same_on_one_and_eight_devices, tiny_vit_config)

E1, E2 = [1.0, 0.0], [0.0, 1.0]
BANK = jnp.array([E1, E2, [-1.0, 0.0], [0.0, -1.0]])  # n = 4 unit rows


def tiny_config(**overrides):
  """``instdisc.py:cpu`` shrunk to seconds, with NCE (the paper's loss; the preset's
  is the softmax): 16 px, width x0.125, a 16-d head, a bank of the first 512 train
  images, 64 noise rows, 4 steps of 16 images, kNN at the start and the end."""
  c = instdisc_config.get_config("cpu")
  c.update(data_dir=SHARED_TFDS, image_size=16, batch_size=16, num_train_examples=512,
           total_steps=4, log_every_steps=1, eval_every_steps=4, checkpoint_every_steps=1000)
  c.model.width_multiplier = 0.125
  c.head.output_dim = 16
  c.instdisc.update(loss="nce", num_noise=64)
  c.knn.update(num_train_examples=256, num_eval_examples=64, batch_size=64)
  for k, v in overrides.items():
    c[k] = v
  return c


def take(ds, n):
  return list(itertools.islice(pipeline.as_numpy(ds), n))


# ------------------------------------------------------------ the loss by hand


def test_hand_worked_nce_loss_on_a_tiny_bank():
  """tau = 1, Z = e, m = 2 noise rows of n = 4, so m/n = 1/2 and
  P(v) = exp(v.f) / e. Sample 1: f = e1, its row e1 (P = 1), noise e2 (P = 1/e)
  and e1 (P = 1); sample 2: f = e2, its row e2, noise -e2 (P = e^-2) and -e1 (1/e).
  -log h = log((P + 1/2) / P), -log(1 - h) = log((P + 1/2) / (1/2))."""
  f, index, noise = jnp.array([E1, E2]), jnp.array([0, 1]), jnp.array([[1, 0], [3, 2]])
  positive_logits = jnp.sum(f * BANK[index], -1)
  noise_logits = jnp.einsum("bd,bmd->bm", f, BANK[noise])
  got = instdisc.nce_loss(positive_logits, noise_logits, z=jnp.e, bank_size=4)
  e = np.e
  sample1 = np.log(1.5) + np.log(1 + 2 / e) + np.log(3.0)
  sample2 = np.log(1.5) + np.log(1 + 2 / e ** 2) + np.log(1 + 2 / e)
  assert float(got) == pytest.approx((sample1 + sample2) / 2, rel=1e-6)
  # The temperature divides the logits: tau = 0.5 is tau = 1 with logits doubled.
  assert float(instdisc.nce_loss(2 * positive_logits, 2 * noise_logits, z=jnp.e,
                                 bank_size=4)) != pytest.approx(float(got))


def test_z_is_n_times_the_mean_exponential_over_the_noise_rows():
  noise_logits = jnp.array([[0.0, 1.0], [-1.0, 0.0]])  # the two samples' above
  z = instdisc.estimate_z(noise_logits, 4, None)
  assert float(z) == pytest.approx(4 * (2 + np.e + 1 / np.e) / 4, rel=1e-6)


def test_z_over_8_devices_is_the_global_batchs():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
  local = lambda x, axis: instdisc.estimate_z(x, 100, axis)[None]  # one per device
  np.testing.assert_allclose(np.asarray(on_mesh(local, 8, logits)),
                             float(instdisc.estimate_z(logits, 100, None)), rtol=1e-6)


def test_hand_worked_full_softmax():
  # f = e1 against the 4 rows at tau = 0.5: logits [2, 0, -2, 0], its own row first.
  got = instdisc.softmax_loss(jnp.array([E1]), BANK, jnp.array([0]), temperature=0.5)
  assert float(got[0]) == pytest.approx(-2 + np.log(np.exp(2) + 2 + np.exp(-2)), rel=1e-6)
  # Rows past bank_size (the padding that lets the rows split over the devices) are
  # not classes: over the first 3 rows the logit 0 of row 3 drops out.
  got = instdisc.softmax_loss(jnp.array([E1]), BANK, jnp.array([0]), temperature=0.5,
                              bank_size=3)
  assert float(got[0]) == pytest.approx(-2 + np.log(np.exp(2) + 1 + np.exp(-2)), rel=1e-6)


def _on_sharded_bank(fn, bank, *replicated):
  """``fn(bank block, *replicated, axis_name)`` on 8 devices, the bank split by rows
  and the other arguments whole on each; the result as device 0 has it."""
  mesh = parallel.make_mesh(8)
  mapped = jax.shard_map(lambda b, *a: fn(b, *a, parallel.DATA)[None], mesh=mesh,
                         in_specs=(P(parallel.DATA),) + (P(),) * len(replicated),
                         out_specs=P(parallel.DATA))
  put = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
  return np.asarray(jax.jit(mapped)(put(bank, P(parallel.DATA)),
                                    *(put(x, P()) for x in replicated)))


def test_a_bank_sharded_over_8_devices_reads_scores_and_updates_as_a_whole_one():
  """Rows, noise logits, the full softmax and the update over a bank split into 8
  blocks of 5 rows equal those over the whole bank on one device (37 real rows:
  the last 3 are padding)."""
  rng = np.random.default_rng(0)
  bank = jnp.asarray(rng.normal(size=(40, 6)), jnp.float32)
  f = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
  index = jnp.asarray(rng.permutation(37)[:16], jnp.int32)
  noise = jnp.asarray(rng.integers(0, 37, size=(16, 9)), jnp.int32)
  assert instdisc.bank_rows(37, 8) == 40 and instdisc.bank_rows(40, 8) == 40
  rows = _on_sharded_bank(lambda b, i, axis: instdisc.sharded_rows(b, i, axis), bank, index)
  np.testing.assert_array_equal(rows[0], bank[index])
  np.testing.assert_array_equal(rows[0], rows[7])  # every device has them all
  logits = _on_sharded_bank(lambda b, f, i, axis: instdisc.sharded_logits(f, i, b, axis),
                            bank, f, noise)
  np.testing.assert_allclose(logits[0], jnp.einsum("bd,bmd->bm", f, bank[noise]), rtol=1e-6)
  soft = _on_sharded_bank(lambda b, f, i, axis: instdisc.softmax_loss(
      f, b, i, temperature=0.5, bank_size=37, axis_name=axis), bank, f, index)
  np.testing.assert_allclose(soft[0], instdisc.softmax_loss(
      f, bank[:37], index, temperature=0.5), rtol=1e-5)
  updated = _on_sharded_bank(lambda b, i, f, axis: instdisc.update_bank(b, i, f, 0.5, axis),
                             bank, index, f)
  np.testing.assert_allclose(updated.reshape(40, 6), instdisc.update_bank(bank, index, f, 0.5),
                             rtol=1e-6, atol=1e-7)


def test_the_train_states_bank_is_split_over_the_devices():
  c = tiny_config(num_train_examples=100)
  method = methods.get_method(c, 10, 4)
  state = step_lib.create_train_state(method, optax.sgd(0.1), jax.random.PRNGKey(0),
                                      (2, 16, 16, 3), parallel.make_mesh(8))
  bank = state.extra["bank"]
  assert bank.shape == (104, c.head.output_dim)  # 100 rows, rounded up to 8 x 13
  assert {s.data.shape[0] for s in bank.addressable_shards} == {13}
  np.testing.assert_array_equal(np.asarray(bank)[100:], 0.0)
  assert bank.sharding.spec == P(parallel.DATA) and state.extra["z"].sharding.spec == P()


def test_bank_update_by_index_with_momentum_then_renormalised():
  # Rows 1 and 3 move halfway to e1, then back to unit length; rows 0 and 2 stay.
  bank = instdisc.update_bank(BANK, jnp.array([1, 3]), jnp.array([E1, E1]), 0.5)
  s = 1 / np.sqrt(2)
  np.testing.assert_allclose(bank, [E1, [s, s], [-1, 0], [s, -s]], rtol=1e-6, atol=1e-7)
  # An image twice in a batch (an epoch boundary) moves by the mean of its features:
  # row 2 = normalise(0.5 (-1, 0) + 0.5 (0.5, 0.5)) = (-1, 1) / sqrt(2).
  bank = instdisc.update_bank(BANK, jnp.array([2, 2]), jnp.array([E2, E1]), 0.5)
  np.testing.assert_allclose(bank[2], [-s, s], rtol=1e-6)
  np.testing.assert_allclose(np.delete(np.asarray(bank), 2, 0), np.delete(BANK, 2, 0))


def test_noise_rows_are_keyed_by_the_samples_global_row():
  """The draws of row r do not depend on which other rows are drawn with it (so
  not on how the global batch is split over devices); they are uniform on [0, n)."""
  rng = jax.random.PRNGKey(3)
  together = instdisc.noise_indices(rng, jnp.arange(8), 5, 10)
  alone = jnp.concatenate([instdisc.noise_indices(rng, jnp.array([r]), 5, 10)
                           for r in range(8)])
  np.testing.assert_array_equal(together, alone)
  assert not (together[0] == together[1]).all()
  counts = np.bincount(np.asarray(instdisc.noise_indices(rng, jnp.arange(4), 20_000, 10))
                       .ravel(), minlength=10)
  assert counts.min() > 0.09 * 80_000 and counts.max() < 0.11 * 80_000


def test_proximal_term_adds_lambda_times_the_squared_distance_to_the_bank_row():
  c = tiny_config(num_train_examples=8)
  c.instdisc.loss = "softmax"
  method = methods.get_method(c, 10, 4)
  rng = np.random.default_rng(0)
  batch = {"views": (jnp.asarray(rng.uniform(size=(4, 16, 16, 3)), jnp.float32),),
           "label": jnp.arange(4), "index": jnp.array([5, 0, 2, 7])}
  params, batch_stats, extra = method.init(jax.random.PRNGKey(0), batch["views"][0])
  loss = lambda m: m.loss(params, batch_stats, extra, batch, jax.random.PRNGKey(1),
                          jnp.zeros((), jnp.int32), None)[1][2]["loss"]
  (_, (z, _), _, _), _ = base.apply_together(method.net(None), params, batch_stats,
                                             batch["views"])
  f = np.asarray(z / jnp.linalg.norm(z, axis=-1, keepdims=True))
  distance = np.mean(np.sum((f - np.asarray(extra["bank"])[[5, 0, 2, 7]]) ** 2, -1))
  without = float(loss(method))
  c.instdisc.proximal = 2.0  # the method reads its config at every call
  assert float(loss(method)) == pytest.approx(without + 2.0 * distance, rel=1e-5)


# ------------------------------------------------------- the index of each example


def test_batches_carry_each_examples_index_in_the_split():
  c = tiny_config(num_train_examples=96)
  labels = np.array([x["label"] for x in pipeline.as_numpy(sources.read(c, "train", 96))])
  epoch = take(pipeline.train_dataset(c, 16), 6)  # 96 examples: one epoch
  index = np.concatenate([b["index"] for b in epoch])
  assert epoch[0]["index"].dtype == np.int32
  assert sorted(index) == list(range(96))
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in epoch]), labels[index])
  # Deterministic: a stream resumed at step 4 (across the epoch) has the same indices.
  full = take(pipeline.train_dataset(c, 16), 8)
  resumed = take(pipeline.train_dataset(c, 16, start_step=4), 4)
  for x, y in zip(full[4:], resumed):
    np.testing.assert_array_equal(x["index"], y["index"])
  # Other methods' batches are what they were: no index.
  other = simclr_v2.get_config("cpu")
  other.update(data_dir=SHARED_TFDS, num_train_examples=96)
  assert set(take(pipeline.train_dataset(other, 16), 1)[0]) == {"views", "label"}


def _image_folder(root):
  import tensorflow as tf
  for split in ("train", "test"):
    for label in ("cat", "dog"):
      (root / split / label).mkdir(parents=True)
      for i in range(5):
        img = np.random.default_rng([i, len(label)]).integers(0, 255, (8, 8, 3), np.uint8)
        tf.io.write_file(str(root / split / label / f"{i}.png"), tf.io.encode_png(img))


@pytest.mark.parametrize("dataset", ["cifar10", "image_folder"])
def test_index_is_the_same_whichever_process_reads_the_example(dataset, tmp_path, monkeypatch):
  """Two processes' parts of the split: disjoint, together every position once, and
  each image under the index it has when one process reads the whole split."""
  c = tiny_config()
  num = 50 if dataset == "cifar10" else None
  if dataset == "image_folder":
    _image_folder(tmp_path)
    c.update(dataset="image_folder", data_dir=str(tmp_path))
  read = lambda: {int(x["index"]): x["image"] for x in pipeline.as_numpy(
      sources.read(c, "train", num, with_index=True))}
  whole = read()
  assert sorted(whole) == list(range(len(whole)))
  parts = []
  for process in (0, 1):
    with monkeypatch.context() as m:
      m.setattr(jax, "process_count", lambda: 2)
      m.setattr(jax, "process_index", lambda p=process: p)
      parts.append(read())
  assert not set(parts[0]) & set(parts[1]) and sorted({**parts[0], **parts[1]}) == sorted(whole)
  for part in parts:
    for i, image in part.items():
      np.testing.assert_array_equal(image, whole[i])


# ------------------------------------------------------------------ training

_RUNS = {}


def run(tmp_path_factory, num_devices):
  """The tiny run on ``num_devices``, cached for the session: (workdir, [last
  checkpoint], [losses of every step])."""
  if num_devices not in _RUNS:
    workdir = tmp_path_factory.mktemp(f"instdisc_{num_devices}")
    _RUNS[num_devices] = workdir, *loop_run(tiny_config(num_devices=num_devices), workdir)
  return _RUNS[num_devices]


def test_one_and_eight_devices_give_the_same_losses(tmp_path_factory):
  """Noise rows keyed by the global row, Z over the global batch, BN across the
  mesh, the bank written with the global batch: the same losses, parameters and
  bank on any mesh."""
  same_on_one_and_eight_devices(lambda n: run(tmp_path_factory, n)[1:], atol=1e-4)


def test_bank_after_training_holds_the_seen_images_rows(tmp_path_factory):
  """After 4 steps exactly the 64 rows of the images the pipeline gave moved (unit
  length), every other row is as initialised; Z was estimated once, on step 1."""
  workdir = run(tmp_path_factory, 8)[0]
  c = tiny_config(num_devices=8)
  extra = restore(workdir, 4)["extra"]
  init_rng, _ = jax.random.split(jax.random.PRNGKey(c.seed))  # as train.py seeds init
  _, _, at_start = methods.get_method(c, 10, 4).init(init_rng, jnp.zeros((2, 16, 16, 3)))
  seen = np.concatenate([b["index"] for b in take(pipeline.train_dataset(c, 16), 4)])
  moved = np.flatnonzero(~np.isclose(extra["bank"], at_start["bank"], atol=1e-6).all(axis=1))
  np.testing.assert_array_equal(moved, np.unique(seen))
  assert len(moved) == 64
  np.testing.assert_allclose(np.linalg.norm(extra["bank"], axis=1), 1.0, rtol=1e-5)
  z = [r["nce_z"] for r in read_metrics(workdir) if "nce_z" in r]
  assert len(z) == 4 and len(set(z)) == 1 and z[0] == pytest.approx(float(extra["z"]))
  assert z[0] > 0


def test_stopped_and_resumed_run_restores_the_bank(tmp_path_factory, tmp_path, monkeypatch):
  """Stop after step 2 (a checkpoint), resume: the same losses and final bank as the
  uninterrupted run, so the bank and Z were saved and restored, not re-initialised."""
  straight = run(tmp_path_factory, 8)[0]
  config = tiny_config(num_devices=8)
  preempted_run(config, str(tmp_path), monkeypatch, steps=2)
  saved = restore(tmp_path, 2)["extra"]
  assert set(saved) == {"bank", "z"} and float(saved["z"]) > 0
  train.train_and_evaluate(config, str(tmp_path))
  expected, resumed = losses_by_step(straight), losses_by_step(tmp_path)
  assert sorted(resumed) == [1, 2, 3, 4]
  for step in expected:
    assert resumed[step] == pytest.approx(expected[step], rel=1e-6), step
  assert_trees_close(restore(straight, 4)["extra"], restore(tmp_path, 4)["extra"],
                     rtol=1e-6, atol=1e-7)


def test_knn_monitor_and_features_read_the_encoder(tmp_path_factory):
  """The monitor ran at step 0 and at the end; ``features`` is the encoder's output
  (64-d for this ResNet-18 x0.125), not the 16-d embedding."""
  workdir = run(tmp_path_factory, 8)[0]
  knn = {r["step"]: r["knn_top1"] for r in read_metrics(workdir) if "knn_top1" in r}
  assert sorted(knn) == [0, 4] and all(0.0 <= v <= 100.0 for v in knn.values())
  state = restore(workdir, 4)
  method = methods.get_method(tiny_config(), 10, 4)
  images = jnp.zeros((3, 16, 16, 3))
  features = method.features(state["params"], state["batch_stats"], images)
  assert features.shape == (3, 64)
  encoder = base.Method(tiny_config(), 10, 4).features(state["params"], state["batch_stats"],
                                                       images)
  np.testing.assert_array_equal(features, encoder)


def _random_steps(config, num_devices, steps=3):
  """``steps`` train steps on random 16 px images with random distinct indices (the
  batches of ``helpers.train_steps``, one view, plus the index)."""
  c = config
  mesh = parallel.make_mesh(num_devices)
  method = methods.get_method(c, 10, c.total_steps)
  tx, _ = optim.create_optimizer(c, c.batch_size, c.total_steps, c.total_steps)
  state = step_lib.create_train_state(method, tx, jax.random.PRNGKey(0),
                                      (c.batch_size // num_devices, 16, 16, 3), mesh)
  train_step = step_lib.make_train_step(method, tx, mesh)
  rng, states, history = np.random.default_rng(0), [], []
  for _ in range(steps):
    batch = {"views": (rng.uniform(size=(c.batch_size, 16, 16, 3)).astype(np.float32),),
             "label": rng.integers(0, 4, c.batch_size).astype(np.int32),
             "index": rng.permutation(c.num_train_examples)[:c.batch_size].astype(np.int32)}
    state, metrics = train_step(state, parallel.host_to_global(batch, mesh),
                                jax.device_put(jax.random.PRNGKey(1), parallel.replicated(mesh)))
    states.append(jax.tree.map(np.asarray, state))
    history.append({k: float(v.compute()) for k, v in metrics.items()})
  return states, history


def test_full_softmax_with_the_proximal_term_trains_alike_on_one_and_eight_devices():
  config = tiny_vit_config(instdisc_config)  # fast to compile
  config.update(num_train_examples=64, example_index=True)
  config.instdisc.update(loss="softmax", proximal=1.0)
  states, history = same_on_one_and_eight_devices(lambda n: _random_steps(config, n))
  assert "nce_z" not in history[0] and float(states[-1].extra["z"]) == 0.0


# ------------------------------------------------------------------ presets


@pytest.mark.parametrize("variant", instdisc_config.VARIANTS)
def test_preset_follows_the_recipe_and_is_current(variant):
  c = instdisc_config.get_config(variant)
  assert c.method == "instdisc" and c.example_index and c.num_views == 1
  assert (c.instdisc.num_noise, c.instdisc.bank_momentum, c.instdisc.proximal) == (4096, 0.5,
                                                                                  0.0)
  assert c.instdisc.loss == ("nce" if variant == "imagenet" else "softmax")
  assert (c.head.num_layers, c.head.output_dim, c.head.use_bn) == (1, 128, False)
  assert c.optimizer.name == "sgd" and c.optimizer.momentum == 0.9
  if variant == "imagenet":
    assert (c.model.depth, c.batch_size, c.num_epochs, c.instdisc.temperature) == (50, 256, 200,
                                                                                    0.07)
    assert (c.optimizer.base_lr, c.optimizer.weight_decay, c.optimizer.schedule,
            tuple(c.optimizer.step_boundaries)) == (0.03, 1e-4, "step", (0.6, 0.8))
  if variant == "cifar10":
    assert (c.model.depth, c.batch_size, c.num_epochs, c.instdisc.temperature) == (18, 128, 200,
                                                                                    0.1)
    assert c.optimizer.base_lr * c.batch_size / 256 == pytest.approx(0.03)
    assert c.optimizer.weight_decay == 5e-4 and not c.augment.flip
  if variant == "cpu":
    assert c.total_steps == 500 and c.batch_size == 128 and c.augment.flip
    assert c.optimizer.base_lr * c.batch_size / 256 == pytest.approx(0.03)
  # As tests/test_config.py checks every preset: only declared keys, upgrade is a no-op.
  as_json = lambda x: json.loads(x.to_json_best_effort())
  base_keys = config_lib.base_config("instdisc")
  assert set(c) <= set(base_keys)
  assert as_json(config_lib.upgrade(as_json(c))) == as_json(c)


@pytest.mark.parametrize("variant", instdisc_config.VARIANTS)
def test_every_preset_builds_with_a_row_per_training_image(variant):
  """Shapes only (jax.eval_shape). ImageNet is not in ../shared/tfds: its bank size
  is given; CIFAR-10's is read from the dataset."""
  c = instdisc_config.get_config(variant)
  c.data_dir = SHARED_TFDS
  if variant == "imagenet":
    c.instdisc.bank_size = 1_281_167
  method = methods.get_method(c, 1000, 1000)
  tx, _ = optim.create_optimizer(c, c.batch_size, 1000, 100)
  images = jax.ShapeDtypeStruct((2, c.image_size, c.image_size, 3), jnp.float32)
  params, _, extra = jax.eval_shape(method.init, jax.random.PRNGKey(0), images)
  jax.eval_shape(tx.init, params)
  rows = 1_281_167 if variant == "imagenet" else 50_000
  assert method.bank_size == rows and extra["z"].shape == ()
  # rounded up to split over this host's 8 devices: ImageNet's odd count gains a row
  assert extra["bank"].shape == (rows + (variant == "imagenet"), 128)
  assert set(params["head"]) == {"dense_0"}


def test_bad_settings_are_refused_with_the_fix():
  with pytest.raises(ValueError, match="example_index=True"):
    methods.get_method(tiny_config(example_index=False), 10, 4)
  with pytest.raises(ValueError, match="num_views=1"):
    methods.get_method(tiny_config(num_views=2), 10, 4)
  c = tiny_config()
  c.instdisc.loss = "nce2"
  with pytest.raises(ValueError, match=r"instdisc.loss='nce2' is not one of \['nce', 'softmax'\]"):
    methods.get_method(c, 10, 4)
  c = tiny_config()
  c.instdisc.bank_size = 100
  with pytest.raises(ValueError, match="bank_size=100 rows cannot hold"):
    _ = methods.get_method(c, 10, 4).bank_size
