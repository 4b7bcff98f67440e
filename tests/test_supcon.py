"""SupCon: the loss by hand, against a loop reference and NT-Xent, over the global
batch, and the same training steps on 1 and on 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import supcon as supcon_config
from cvrl_jax import losses, parallel
from helpers import preset_shapes, same_on_one_and_eight_devices, tiny_vit_config, train_steps


def _reference(z1, z2, labels, tau):
  """The paper's L_out written as a loop over the 2N anchors, in float64."""
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  y = np.concatenate([labels, labels])
  total = 0.0
  for i in range(len(z)):
    others = [a for a in range(len(z)) if a != i]
    log_denominator = np.log(sum(np.exp(z[i] @ z[a] / tau) for a in others))
    positives = [p for p in others if y[p] == y[i]]
    total += -np.mean([z[i] @ z[p] / tau - log_denominator for p in positives])
  return total / len(z)


def test_hand_worked_loss():
  # One class, all four views the same direction: each anchor's three candidates
  # are all positives with equal logits, log-probability -log 3 each: L = log 3.
  z = jnp.array([[1.0, 0.0], [2.0, 0.0]])
  got = losses.supcon_loss(z, 3 * z, jnp.array([7, 7]), temperature=0.5)
  assert float(got) == pytest.approx(np.log(3), rel=1e-6)
  # Views a, a' = e1 and b, b' = e2, tau = 1. Same class: anchor a has positives
  # a' (logit 1) and b, b' (logit 0): -(1 + 0 + 0)/3 + log(e + 2).
  z1, z2 = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([[1.0, 0.0], [0.0, 1.0]])
  got = losses.supcon_loss(z1, z2, jnp.array([0, 0]), temperature=1.0)
  assert float(got) == pytest.approx(np.log(np.e + 2) - 1 / 3, rel=1e-6)
  # Different classes: only a' is a positive, -1 + log(e + 2), SimCLR's value.
  got = losses.supcon_loss(z1, z2, jnp.array([0, 1]), temperature=1.0)
  assert float(got) == pytest.approx(np.log(np.e + 2) - 1, rel=1e-6)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_matches_loop_reference_and_nt_xent_for_distinct_labels(tau):
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(8, 5)), rng.normal(size=(8, 5))
  labels = rng.integers(0, 3, 8)
  got = float(losses.supcon_loss(jnp.asarray(z1), jnp.asarray(z2), jnp.asarray(labels),
                                 temperature=tau))
  assert got == pytest.approx(_reference(z1, z2, labels, tau), rel=1e-5)
  distinct = losses.supcon_loss(jnp.asarray(z1), jnp.asarray(z2), jnp.arange(8),
                                temperature=tau)
  np.testing.assert_allclose(distinct, losses.nt_xent(z1, z2, temperature=tau), rtol=1e-5)


def test_global_batch_over_8_devices_equals_single_device():
  """Positives chosen by label across devices: pmean of the per-device loss and its
  gradient equal the single-device ones of the whole batch."""
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(2)
  z1, z2 = (jnp.asarray(rng.normal(size=(32, 8)), jnp.float32) for _ in range(2))
  labels = jnp.asarray(rng.integers(0, 4, 32), jnp.int32)

  def local(a, b, y):
    loss = losses.supcon_loss(a, b, y, temperature=0.2, axis_name=parallel.DATA)
    return jax.lax.pmean(loss, parallel.DATA)

  sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("data"),) * 3,
                                  out_specs=P()))
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  single = lambda a, b: losses.supcon_loss(a, b, labels, temperature=0.2)
  np.testing.assert_allclose(sharded(put(z1), put(z2), put(labels)), single(z1, z2),
                             rtol=1e-5)
  g8 = jax.jit(jax.grad(sharded, argnums=(0, 1)))(put(z1), put(z2), put(labels))
  g1 = jax.grad(single, argnums=(0, 1))(z1, z2)
  for a, b in zip(g8, g1):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


def test_one_and_eight_devices_give_the_same_steps():
  config = tiny_vit_config(supcon_config)
  same_on_one_and_eight_devices(lambda n: train_steps(config, n))


def test_every_preset_builds():
  for c, params, _ in preset_shapes(supcon_config):
    assert params["head"]["dense_1"]["kernel"].shape[-1] == c.head.output_dim
