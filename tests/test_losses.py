"""NT-Xent against hand-worked values, a loop reference, and the global-batch contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from cvrl_jax import losses, parallel


def _reference_nt_xent(z1, z2, tau):
  """SimCLR's definition, written as the paper states it: 2N views, a loop."""
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n = len(z1)
  total = 0.0
  for i in range(2 * n):
    j = (i + n) % (2 * n)  # the other view of the same image
    sims = np.array([z[i] @ z[k] / tau for k in range(2 * n) if k != i])
    pos = z[i] @ z[j] / tau
    total += -(pos - np.log(np.sum(np.exp(sims))))
  return total / (2 * n)


def test_one_pair_has_zero_loss():
  # With one image the only candidate of each view is its positive.
  z1, z2 = jnp.array([[1.0, 0.0]]), jnp.array([[0.3, 0.7]])
  assert float(losses.nt_xent(z1, z2, temperature=0.5)) == pytest.approx(0.0, abs=1e-6)


def test_hand_worked_two_pairs():
  # Views: a=(1,0), a'=(1,0), b=(0,1), b'=(0,1); tau=1.
  # Anchor a: positive a' (sim 1), negatives b, b' (sim 0 each):
  #   l = -log(e / (e + 1 + 1)) = log(e + 2) - 1, the same for all 4 anchors.
  z1 = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  z2 = jnp.array([[2.0, 0.0], [0.0, 3.0]])  # unnormalised on purpose
  expected = np.log(np.e + 2) - 1
  assert float(losses.nt_xent(z1, z2, temperature=1.0)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_matches_loop_reference(tau):
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  got = float(losses.nt_xent(jnp.asarray(z1), jnp.asarray(z2), temperature=tau))
  assert got == pytest.approx(_reference_nt_xent(z1, z2, tau), rel=1e-5)


def test_perfect_alignment_is_lower_than_random():
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.normal(size=(16, 8)))
  aligned = losses.nt_xent(z, z, temperature=0.1)
  random = losses.nt_xent(z, jnp.asarray(rng.normal(size=(16, 8))), temperature=0.1)
  assert float(aligned) < float(random)


def test_global_batch_over_8_devices_equals_single_device():
  """pmean of the per-device loss == the single-device loss of the whole batch,
  and so are the gradients with respect to the projections."""
  assert jax.device_count() == 8
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(2)
  z1, z2 = (jnp.asarray(rng.normal(size=(32, 16)), jnp.float32) for _ in range(2))

  def local(z1, z2):
    loss = losses.nt_xent(z1, z2, temperature=0.2, axis_name=parallel.DATA)
    return jax.lax.pmean(loss, parallel.DATA)

  sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("data"), P("data")),
                                  out_specs=P()))
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  single = losses.nt_xent(z1, z2, temperature=0.2)
  np.testing.assert_allclose(sharded(put(z1), put(z2)), single, rtol=1e-5)

  g_sharded = jax.jit(jax.grad(lambda a, b: sharded(a, b), argnums=(0, 1)))(put(z1), put(z2))
  g_single = jax.grad(lambda a, b: losses.nt_xent(a, b, temperature=0.2), argnums=(0, 1))(z1, z2)
  for a, b in zip(g_sharded, g_single):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


def test_device_local_value_is_mean_over_own_anchors():
  """Without pmean each device returns the loss of its own anchors only."""
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(3)
  z1, z2 = (jnp.asarray(rng.normal(size=(16, 4)), jnp.float32) for _ in range(2))
  per_device = jax.jit(jax.shard_map(
      lambda a, b: losses.nt_xent(a, b, temperature=0.5, axis_name="data")[None],
      mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P("data")))
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  values = np.asarray(per_device(put(z1), put(z2)))
  assert values.shape == (8,)
  assert np.std(values) > 1e-3  # different anchors, different losses
  np.testing.assert_allclose(values.mean(), losses.nt_xent(z1, z2, temperature=0.5), rtol=1e-5)


def test_moco_infonce_hand_worked():
  # tau = 0.5, unnormalised rows on purpose. Query a=(1,0): key (2,0) has cosine
  # 1, the queue (0,1) and (-3,0) cosines 0 and -1: logits [2, 0, -2], loss
  # log(e^2 + 1 + e^-2) - 2. Query b=(0,1): key (0,5) cosine 1, queue cosines 1
  # and 0: logits [2, 2, 0], loss log(2e^2 + 1) - 2. The loss is their mean.
  q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  k = jnp.array([[2.0, 0.0], [0.0, 5.0]])
  queue = jnp.array([[0.0, 1.0], [-3.0, 0.0]])
  e2 = np.exp(2.0)
  expected = 0.5 * (np.log(e2 + 1 + 1 / e2) - 2 + np.log(2 * e2 + 1) - 2)
  got = float(losses.moco_infonce(q, k, queue, temperature=0.5))
  assert got == pytest.approx(expected, rel=1e-6)


def test_moco_v3_ctr_hand_worked():
  # Two images with orthogonal keys: each query's logits are [1/tau, 0] (own key
  # first for query 0, second for query 1), CE = log(e^(1/tau) + 1) - 1/tau, x 2 tau.
  q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  k = jnp.array([[3.0, 0.0], [0.0, 2.0]])
  for tau in (0.5, 0.25):
    expected = 2 * tau * (np.log(np.exp(1 / tau) + 1) - 1 / tau)
    assert float(losses.moco_v3_ctr(q, k, temperature=tau)) == pytest.approx(expected, rel=1e-5)
  # Swapped keys: each query's own key is now orthogonal to it and the other
  # key aligned: logits [0, 2] with label 0, CE = log(1 + e^2), x 2 tau = 1.
  swapped = float(losses.moco_v3_ctr(q, k[::-1], temperature=0.5))
  assert swapped == pytest.approx(np.log(1 + np.exp(2.0)), rel=1e-6)


def test_moco_v3_ctr_over_8_devices_equals_single_device():
  """Keys of the global batch as negatives: pmean of the per-device loss and its
  gradient equal the single-device ones of the whole batch."""
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(4)
  q, k = (jnp.asarray(rng.normal(size=(32, 8)), jnp.float32) for _ in range(2))

  def local(q, k):
    return jax.lax.pmean(losses.moco_v3_ctr(q, k, temperature=0.2, axis_name=parallel.DATA),
                         parallel.DATA)

  sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("data"), P("data")),
                                  out_specs=P()))
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  single = lambda q: losses.moco_v3_ctr(q, k, temperature=0.2)
  np.testing.assert_allclose(sharded(put(q), put(k)), single(q), rtol=1e-5)
  g_sharded = jax.jit(jax.grad(lambda a: sharded(a, put(k))))(put(q))
  np.testing.assert_allclose(np.asarray(g_sharded), np.asarray(jax.grad(single)(q)),
                             rtol=1e-4, atol=1e-7)
