"""SimSiam: its loss against hand-worked values, the stop-gradient, and the same
training steps on 1 and on 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import simsiam as simsiam_config
from cvrl_jax import losses
from cvrl_jax.methods import simsiam
from helpers import preset_shapes, same_on_one_and_eight_devices, tiny_vit_config, train_steps


def test_hand_worked_loss():
  # D(p1, z2): p1=(1,1), z2=(3,0): cos 1/sqrt(2). D(p2, z1): p2=(1,0), z1=(-2,0): cos -1.
  # L = (-1/sqrt(2) + 1) / 2, for any scale of the vectors.
  p1, p2 = jnp.array([[1.0, 1.0]]), jnp.array([[1.0, 0.0]])
  z1, z2 = jnp.array([[-2.0, 0.0]]), jnp.array([[3.0, 0.0]])
  expected = 0.5 * (-1 / np.sqrt(2) + 1)
  assert float(losses.simsiam_loss(p1, p2, z1, z2)) == pytest.approx(expected, rel=1e-6)
  # Predictions aligned with the other view's projections: the minimum, -1.
  assert float(losses.simsiam_loss(z2, z1, z1, 5 * z2)) == pytest.approx(-1.0, rel=1e-6)


def test_projections_are_not_differentiated():
  rng = np.random.default_rng(0)
  p1, p2, z1, z2 = (jnp.asarray(rng.normal(size=(4, 3))) for _ in range(4))
  grads = jax.grad(losses.simsiam_loss, argnums=(0, 1, 2, 3))(p1, p2, z1, z2)
  assert all(float(jnp.abs(g).max()) > 0 for g in grads[:2])
  assert all(float(jnp.abs(g).max()) == 0 for g in grads[2:])


def test_global_std_is_zero_when_collapsed():
  z = jnp.tile(jnp.array([[0.6, 0.8]]), (8, 1))
  assert float(simsiam.global_std(z, None)) == pytest.approx(0.0, abs=1e-6)
  # Rows +-e1: the first dimension has std 1, the second 0: mean 0.5.
  assert float(simsiam.global_std(jnp.array([[1.0, 0], [-1, 0]]), None)) == pytest.approx(0.5)


def test_one_and_eight_devices_give_the_same_steps():
  config = tiny_vit_config(simsiam_config)
  _, history = same_on_one_and_eight_devices(lambda n: train_steps(config, n))
  assert all(-1.0 <= m["loss"] <= 1.0 for m in history)


def test_every_preset_builds():
  """Shapes only (jax.eval_shape): networks, state and optimiser of every variant."""
  for c, params, _ in preset_shapes(simsiam_config):
    assert params["predictor"]["dense_1"]["kernel"].shape[-1] == c.head.output_dim
