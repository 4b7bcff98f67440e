"""SwAV: Sinkhorn-Knopp and the swapped prediction by hand, their global-batch
versions against one device, prototypes, the queue, and tiny runs on real CIFAR-10."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import swav as swav_config
from conftest import SHARED_TFDS
from cvrl_jax import config as config_lib, losses
from cvrl_jax.methods import swav
from helpers import (loop_run, on_mesh, plain_sgd, preset_shapes, read_metrics,
                     same_on_one_and_eight_devices, train_steps)


def tiny_config(**overrides):
  c = swav_config.get_config("cpu")
  c.update(data_dir=SHARED_TFDS, image_size=16, batch_size=16, num_train_examples=512,
           total_steps=4, num_epochs=0.125, log_every_steps=1, eval_every_steps=1000,
           checkpoint_every_steps=1000)
  c.model.width_multiplier = 0.125
  c.head.update(hidden_dim=32, output_dim=16)
  config_lib.use_multicrop(c, num_small=2, size=8, crop_area=(0.05, 0.14))
  # 4 steps = 0.125 epochs. A queue of 2 global batches filled from the 2nd step
  # (1/32 epoch) on: full after the 3rd, used in Sinkhorn in the 4th.
  c.swav.update(num_prototypes=12, freeze_prototypes_steps=1, queue_size=32,
                queue_start_epochs=1 / 32)
  c.optimizer.base_lr = 1.0
  c.knn.update(num_train_examples=256, num_eval_examples=64, batch_size=64,
               eval_at_start=False)
  for k, v in overrides.items():
    c[k] = v
  return c


# ------------------------------------------------------------------ Sinkhorn


def test_sinkhorn_keeps_a_balanced_assignment():
  # exp(scores) = [[2, 1], [1, 2]]: every prototype already holds half the mass,
  # so the codes are just the rows normalised.
  codes = losses.sinkhorn(jnp.log(jnp.array([[2.0, 1.0], [1.0, 2.0]])), epsilon=1.0,
                        num_iters=3)
  np.testing.assert_allclose(codes, [[2 / 3, 1 / 3], [1 / 3, 2 / 3]], rtol=1e-6)


def test_sinkhorn_splits_samples_that_all_prefer_one_prototype():
  # exp(scores) = [[3, 1], [3, 1]]; by hand, one iteration: / total 8 -> prototype
  # masses 6/8 and 2/8 scaled to 1/2 each -> every entry 1/4 -> rows sum to 1.
  scores = jnp.log(jnp.array([[3.0, 1.0], [3.0, 1.0]]))
  codes = losses.sinkhorn(scores, epsilon=1.0, num_iters=1)
  np.testing.assert_allclose(codes, [[0.5, 0.5], [0.5, 0.5]], rtol=1e-6)
  # epsilon sharpens before balancing: at 0.5 the entries are 9 and 1, same answer.
  np.testing.assert_allclose(losses.sinkhorn(scores, epsilon=0.5, num_iters=1), codes, rtol=1e-6)


def numpy_sinkhorn(scores, epsilon, num_iters):
  """The textbook loop, prototypes as rows: the reference for the tests below."""
  q = np.exp(np.asarray(scores, np.float64) / epsilon).T
  k, b = q.shape
  q /= q.sum()
  for _ in range(num_iters):
    q /= q.sum(axis=1, keepdims=True) * k
    q /= q.sum(axis=0, keepdims=True) * b
  return (q * b).T


def test_sinkhorn_matches_the_reference_and_balances_prototypes():
  scores = jax.random.uniform(jax.random.PRNGKey(0), (32, 6), minval=-1, maxval=1)
  codes = losses.sinkhorn(scores, epsilon=0.05, num_iters=3)
  np.testing.assert_allclose(codes, numpy_sinkhorn(scores, 0.05, 3), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(codes.sum(axis=1), 1.0, rtol=1e-5)
  # 3 iterations bring the prototypes' use closer to equal (32 / 6 each)
  # than the plain softmax assignment, though not exactly.
  spread = lambda q: np.abs(np.asarray(q).sum(axis=0) - 32 / 6).max()
  assert spread(codes) < 0.5 * spread(jax.nn.softmax(scores / 0.05))


def test_sinkhorn_over_eight_devices_is_the_global_batch_on_one():
  scores = jax.random.uniform(jax.random.PRNGKey(1), (64, 10), minval=-1, maxval=1)
  sk = lambda s, axis_name: losses.sinkhorn(s, epsilon=0.05, num_iters=3, axis_name=axis_name)
  np.testing.assert_allclose(on_mesh(sk, 8, scores), sk(scores, None), rtol=1e-5, atol=1e-7)


def test_sinkhorn_weights_leave_rows_out():
  scores = jax.random.uniform(jax.random.PRNGKey(2), (24, 5), minval=-1, maxval=1)
  weights = (jnp.arange(24) % 3 != 0).astype(jnp.float32)
  sk = lambda s, w, axis_name: losses.sinkhorn(s, epsilon=0.05, num_iters=3,
                                             axis_name=axis_name, weights=w)
  kept = np.asarray(sk(scores, weights, None))
  np.testing.assert_allclose(kept[weights == 1], sk(scores[weights == 1], None, None),
                             rtol=1e-5, atol=1e-7)
  assert (kept[weights == 0] == 0).all()
  np.testing.assert_allclose(on_mesh(sk, 8, scores, weights), kept, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------- loss


def test_swapped_prediction_by_hand():
  # Crop 1's softmax is [3/4, 1/4], crop 0's [1/2, 1/2]; both codes say prototype 0:
  # crop 0's codes are predicted by crop 1 (-log 3/4), crop 1's by crop 0 (log 2).
  codes = [jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 0.0]])]
  scores = [jnp.zeros((1, 2)), jnp.array([[math.log(3.0), 0.0]])]
  loss = losses.swapped_prediction(codes, scores, temperature=1.0)
  assert float(loss) == pytest.approx((math.log(4 / 3) + math.log(2)) / 2, rel=1e-6)
  # A small crop (uniform prediction) only predicts: each code gets the mean of two.
  loss = losses.swapped_prediction(codes, scores + [jnp.zeros((1, 2))], temperature=1.0)
  expected = ((math.log(4 / 3) + math.log(2)) / 2 + (math.log(2) + math.log(2)) / 2) / 2
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  # Temperature 0.5 doubles the scores: crop 1's softmax becomes [9/10, 1/10].
  loss = losses.swapped_prediction(codes, scores, temperature=0.5)
  assert float(loss) == pytest.approx((math.log(10 / 9) + math.log(2)) / 2, rel=1e-6)


# ---------------------------------------------------------------- training


def test_prototypes_stay_unit_length_and_frozen_at_first():
  c = plain_sgd(tiny_config())
  c.swav.queue_size = 0
  (s0, s1, s2), _ = train_steps(c, 2, steps=2)
  protos = [s.params["head"][swav.PROTOTYPES]["kernel"] for s in (s0, s1, s2)]
  for p in protos:
    np.testing.assert_allclose(np.linalg.norm(p, axis=0), 1.0, rtol=1e-5)
  np.testing.assert_allclose(protos[1], protos[0], rtol=1e-5, atol=1e-6)  # frozen at step 0
  assert np.abs(protos[2] - protos[1]).max() > 1e-4  # learning from step 1
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(),
                                       s0.params["encoder"], s1.params["encoder"]))
  assert max(moved) > 0  # the rest of the network learns meanwhile


def test_one_and_eight_devices_give_the_same_losses(tmp_path):
  """Global BN, Sinkhorn over the mesh, a replicated queue: the same losses and
  state on 1 and 8 devices, through multi-crop, frozen prototypes and the queue."""
  run = lambda n: loop_run(tiny_config(num_devices=n), tmp_path / f"devices_{n}")
  (state,), _ = same_on_one_and_eight_devices(run, atol=1e-4)
  # The queue holds the global batch's embeddings, in its order, on any mesh.
  assert bool(state.extra["queue_full"]) and int(state.extra["queue_ptr"]) == 16
  np.testing.assert_allclose(np.linalg.norm(state.extra["queue"], axis=-1), 1.0, rtol=1e-5)
  entropy = [r["code_entropy"] for r in read_metrics(tmp_path / "devices_8")
             if "code_entropy" in r]
  assert all(0 < e <= math.log(12) + 1e-4 for e in entropy)


def test_every_preset_builds():
  for c, params, extra in preset_shapes(swav_config):
    assert params["head"][swav.PROTOTYPES]["kernel"].shape == (c.head.output_dim,
                                                              c.swav.num_prototypes)
    if c.swav.queue_size:
      assert extra["queue"].shape == (2, c.swav.queue_size, c.head.output_dim)
