"""Barlow Twins: the loss by hand and against a loop reference, its cross-
correlation over the global batch, and the same training steps on 1 and 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import barlow_twins as bt_config
from cvrl_jax import losses, parallel
from helpers import preset_shapes, same_on_one_and_eight_devices, tiny_vit_config, train_steps


def _reference(z1, z2, lambd):
  """The paper's definition, written out with loops in float64."""
  z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
  n, d = z1.shape
  a = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + 1e-5)
  b = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + 1e-5)
  loss = 0.0
  for i in range(d):
    for j in range(d):
      c = sum(a[k, i] * b[k, j] for k in range(n)) / n
      loss += (1 - c) ** 2 if i == j else lambd * c ** 2
  return loss


def test_hand_worked_loss():
  # z1 columns (1,3) and (2,0) standardise to (-1,1) and (1,-1) (mean 2 / 1, std 1).
  # With z2 = z1: C = [[1,-1],[-1,1]], on-diagonal 0, off-diagonal 1 + 1 = 2.
  z1 = jnp.array([[1.0, 2.0], [3.0, 0.0]])
  eps = 1 / (1 + 1e-5)  # C's entries carry the variance's eps: 1 / (1 + eps)
  c_on, c_off = eps, eps
  expected = 2 * (1 - c_on) ** 2 + 0.1 * 2 * c_off ** 2
  assert float(losses.barlow_twins_loss(z1, z1, lambd=0.1)) == pytest.approx(expected, rel=1e-5)
  # z2 columns (1,3) and (0,2) both standardise to (-1,1): C = [[1,1],[-1,-1]]:
  # on-diagonal (1-1)^2 + (1+1)^2 = 4, off-diagonal 1 + 1 = 2 (up to eps).
  z2 = jnp.array([[1.0, 0.0], [3.0, 2.0]])
  got = float(losses.barlow_twins_loss(z1, z2, lambd=0.1))
  assert got == pytest.approx(4 + 0.1 * 2, rel=1e-4)


def test_matches_loop_reference():
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
  got = float(losses.barlow_twins_loss(jnp.asarray(z1), jnp.asarray(z2), lambd=0.0051))
  assert got == pytest.approx(_reference(z1, z2, 0.0051), rel=1e-5)


def test_global_batch_over_8_devices_equals_single_device():
  """Statistics and C over the global batch: the same loss on every device, equal to
  the single-device one, and the same gradients with respect to the projections."""
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(1)
  z1, z2 = (jnp.asarray(rng.normal(size=(32, 6)), jnp.float32) for _ in range(2))
  sharded = jax.jit(jax.shard_map(
      lambda a, b: losses.barlow_twins_loss(a, b, lambd=0.02, axis_name=parallel.DATA),
      mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P()))
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  single = lambda a, b: losses.barlow_twins_loss(a, b, lambd=0.02)
  np.testing.assert_allclose(sharded(put(z1), put(z2)), single(z1, z2), rtol=1e-5)
  g8 = jax.jit(jax.grad(sharded, argnums=(0, 1)))(put(z1), put(z2))
  g1 = jax.grad(single, argnums=(0, 1))(z1, z2)
  for a, b in zip(g8, g1):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_one_and_eight_devices_give_the_same_steps():
  # A small rate: the tiny run's gradients are large (norm ~50) and at the common
  # rate the first update makes the next steps amplify rounding differences of
  # the two meshes' reductions (0.15% in the loss at step 1).
  config = tiny_vit_config(bt_config, base_lr=0.05)
  same_on_one_and_eight_devices(lambda n: train_steps(config, n))


def test_every_preset_builds():
  for c, params, _ in preset_shapes(bt_config):
    # A linear output layer: BN and ReLU on the hidden layers only.
    assert set(params["head"]) == {"dense_0", "bn_0", "dense_1", "bn_1", "dense_2"}
    assert params["head"]["dense_2"]["kernel"].shape[-1] == c.head.output_dim
