"""DINO: the loss, centring and schedules by hand, the global centre against one
device, the frozen weight-normalised last layer, and tiny runs on real CIFAR-10."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dino as dino_config
from conftest import SHARED_TFDS
from cvrl_jax import config as config_lib, losses
from cvrl_jax.methods import base, dino
from helpers import (assert_trees_close, loop_run, on_mesh, plain_sgd, preset_shapes,
                     read_metrics, same_on_one_and_eight_devices, train_steps)


def tiny_config(**overrides):
  c = dino_config.get_config("cpu")
  c.update(data_dir=SHARED_TFDS, image_size=16, batch_size=16, num_train_examples=512,
           total_steps=4, num_epochs=0.125, log_every_steps=1, eval_every_steps=1000,
           checkpoint_every_steps=1000)
  c.model.width_multiplier = 0.125
  config_lib.use_multicrop(c, num_small=2, size=8, crop_area=(0.05, 0.14))
  # 4 steps = 0.125 epochs: the last layer frozen for step 0, the teacher
  # temperature warming up from 0.04 to 0.07 over steps 0-2.
  c.dino.update(hidden_dim=32, bottleneck_dim=16, out_dim=24, momentum=0.99,
                freeze_last_layer_epochs=1 / 32, warmup_teacher_temp=0.04,
                teacher_temp=0.07, teacher_temp_warmup_epochs=3 / 32)
  c.optimizer.base_lr = 1.0
  c.knn.update(num_train_examples=256, num_eval_examples=64, batch_size=64,
               eval_at_start=False)
  for k, v in overrides.items():
    c[k] = v
  return c


# ------------------------------------------------------------- loss pieces


def test_dino_loss_by_hand():
  # Two teacher crops, three student crops (the third a small crop), K = 2.
  teacher = [jnp.array([[1.0, 0.0]]), jnp.array([[0.5, 0.5]])]
  student = [jnp.zeros((1, 2)), jnp.array([[math.log(3.0), 0.0]]), jnp.zeros((1, 2))]
  # Pairs (teacher i, student v != i): (0,1) -log 3/4, (0,2) log 2, (1,0) log 2,
  # (1,2) log 2 -- and (1,1) against softmax [3/4, 1/4] is skipped.
  loss = losses.dino_loss(student, teacher, student_temp=1.0)
  assert float(loss) == pytest.approx((math.log(4 / 3) + 3 * math.log(2)) / 4, rel=1e-6)
  # Student temperature 0.5 squares the odds of crop 1: softmax [9/10, 1/10].
  loss = losses.dino_loss(student, teacher, student_temp=0.5)
  assert float(loss) == pytest.approx((math.log(10 / 9) + 3 * math.log(2)) / 4, rel=1e-6)


def test_teacher_distribution_is_centred_and_sharpened():
  t = jnp.array([[1.0, 0.0], [2.0, 0.0]])
  np.testing.assert_allclose(dino.teacher_distribution(t, jnp.array([1.5, 0.0]), 1.0),
                             [[1 / (1 + math.e ** 0.5), 1 / (1 + math.e ** -0.5)],
                              [1 / (1 + math.e ** -0.5), 1 / (1 + math.e ** 0.5)]],
                             rtol=1e-6)
  # Temperature 0.5: logits (0.5, 0) become (1, 0).
  p = dino.teacher_distribution(t[1:], jnp.array([1.5, 0.0]), 0.5)
  np.testing.assert_allclose(p, [[math.e / (1 + math.e), 1 / (1 + math.e)]], rtol=1e-6)


def test_centre_is_an_ema_of_the_global_batch_mean():
  center = jnp.array([1.0, 1.0])
  teacher = jnp.array([[1.0, 0.0], [3.0, 2.0]])  # mean [2, 1]
  new = dino.update_center(center, teacher, 0.9, None)
  np.testing.assert_allclose(new, [0.9 + 0.2, 0.9 + 0.1], rtol=1e-6)
  # On 8 devices each holds 8 rows: the pmean of local means is the global mean.
  rows = jax.random.normal(jax.random.PRNGKey(0), (64, 5))
  per_device = lambda t, axis_name: dino.update_center(jnp.zeros(5), t, 0.9, axis_name)[None]
  eight = on_mesh(per_device, 8, rows)
  np.testing.assert_allclose(eight, np.broadcast_to(per_device(rows, None), (8, 5)),
                             rtol=1e-5, atol=1e-7)


def test_teacher_temperature_warms_up_linearly_then_stays():
  temps = [float(dino.teacher_temperature(s, 10, 0.04, 0.07)) for s in (0, 5, 10, 20)]
  assert temps == pytest.approx([0.04, 0.055, 0.07, 0.07])
  assert float(dino.teacher_temperature(3, 0, 0.04, 0.04)) == pytest.approx(0.04)


def test_last_layer_is_weight_normalised():
  head = dino.DINOHead(hidden_dim=8, bottleneck_dim=4, out_dim=6)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5))
  variables = head.init(jax.random.PRNGKey(1), x, train=False)
  scaled = jax.tree_util.tree_map_with_path(
      lambda path, p: 7.0 * p if path[-1].key == dino.LAST_LAYER else p, variables)
  np.testing.assert_allclose(head.apply(scaled, x, train=False),
                             head.apply(variables, x, train=False), rtol=1e-5)
  # Unit bottleneck rows times unit columns: every logit is a cosine.
  assert np.abs(head.apply(variables, x, train=False)).max() <= 1.0 + 1e-6


# ---------------------------------------------------------------- training


def test_last_layer_frozen_first_and_teacher_follows():
  c = plain_sgd(tiny_config())
  (s0, s1, s2), _ = train_steps(c, 2, steps=2)
  last = [s.params["head"][dino.LAST_LAYER] for s in (s0, s1, s2)]
  # Step 0: zero gradient; decoupled weight decay only rescales the columns.
  np.testing.assert_allclose(last[1] / np.linalg.norm(last[1], axis=0),
                             last[0] / np.linalg.norm(last[0], axis=0), rtol=1e-5, atol=1e-6)
  assert np.abs(last[2] - last[1]).max() > 1e-4
  # The teacher is the EMA of the student, with step 1's momentum after step 0.
  m = float(base.cosine_momentum(1, c.total_steps, c.dino.momentum))
  expected = base.momentum_update(s0.extra["teacher_params"], s1.params, m)
  assert_trees_close(s1.extra["teacher_params"], expected, rtol=1e-5, atol=1e-6)
  assert np.abs(s1.extra["center"]).max() > 0


def test_one_and_eight_devices_give_the_same_losses(tmp_path):
  """Global BN (student, teacher, head) and a centre over the mesh: the same
  losses, parameters, teacher and centre on 1 and 8 devices."""
  run = lambda n: loop_run(tiny_config(num_devices=n), tmp_path / f"devices_{n}")
  same_on_one_and_eight_devices(run, atol=1e-4)
  temps = [r["teacher_temp"] for r in read_metrics(tmp_path / "devices_8")
           if "teacher_temp" in r]
  assert temps == pytest.approx([0.04, 0.05, 0.06, 0.07])


def test_dino_with_a_vit_trains_on_multi_crop():
  c = tiny_config()
  c.model.update(name="vit", width=32, depth=1, num_heads=2, patch_size=4)
  c.dino.use_bn_in_head = False
  c.optimizer.update(name="adamw", base_lr=1e-3, weight_decay=0.04, warmup_epochs=0.0)
  (s0, _, s2), _ = train_steps(c, 2, steps=2)
  assert not s0.batch_stats and not s0.extra["teacher_batch_stats"]
  block = lambda s: s.params["encoder"]["block1"]["mlp_1"]["kernel"]
  assert np.abs(block(s2) - block(s0)).max() > 1e-5
  assert np.isfinite(np.abs(s2.extra["center"]).max())


def test_every_preset_builds():
  for c, params, extra in preset_shapes(dino_config):
    assert params["head"][dino.LAST_LAYER].shape == (c.dino.bottleneck_dim, c.dino.out_dim)
    assert jax.tree.structure(extra["teacher_params"]) == jax.tree.structure(
        {k: params[k] for k in ("encoder", "head")})
    assert extra["center"].shape == (c.dino.out_dim,)
