"""The losses against hand-worked values and loop references, and the global-batch
contract (1 device equals 8): NT-Xent and SimCLR's alternatives (DCL, NT-Logistic,
margin triplet), MoCo's InfoNCE and MoCo v3's ctr (and its decoupled form), VICReg."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from cvrl_jax import losses, parallel


def _pairs(z1, z2):
  """(positive similarity, negative similarities) of each of the 2N anchors, as
  SimCLR states them: cosine similarity, the other view of the same image the
  positive, the 2N - 2 views of the other images the negatives; a loop."""
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n = len(z1)
  for i in range(2 * n):
    j = (i + n) % (2 * n)  # the other view of the same image
    yield z[i] @ z[j], np.array([z[i] @ z[k] for k in range(2 * n) if k not in (i, j)])


# Each loss per anchor, from the papers' formulas; the last argument is tau (m).
_PER_ANCHOR = {
    "nt_xent": lambda pos, negs, t: -pos / t + np.log(np.exp(pos / t) + np.exp(negs / t).sum()),
    "dcl": lambda pos, negs, t: -pos / t + np.log(np.exp(negs / t).sum()),
    # -log sigmoid(x) = log(1 + e^-x); the negatives' term averaged.
    "nt_logistic": lambda pos, negs, t: np.log1p(np.exp(-pos / t)) + np.log1p(np.exp(negs / t)).mean(),
    "margin_triplet": lambda pos, negs, m: np.maximum(negs - pos + m, 0).mean(),
}


def _simclr_loss(name, z1, z2, value, **kwargs):
  """``losses.<name>`` with its hyper-parameter: the margin, or the temperature."""
  key = "margin" if name == "margin_triplet" else "temperature"
  return getattr(losses, name)(z1, z2, **{key: value}, **kwargs)


def _one_and_eight_devices_agree(loss, *arrays, per_device=True, atol=1e-7):
  """``loss(*arrays, axis_name=...)`` on 8 devices, the arrays split along the
  batch (``per_device``: a per-device loss, averaged over the mesh; else a
  global one, the same on every device), equals ``loss(*arrays)`` on one, and so
  do its gradients with respect to every array."""
  assert jax.device_count() == 8
  mesh = parallel.make_mesh()

  def local(*a):
    value = loss(*a, axis_name=parallel.DATA)
    return jax.lax.pmean(value, parallel.DATA) if per_device else value

  sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("data"),) * len(arrays),
                                  out_specs=P()))
  put = [jax.device_put(a, NamedSharding(mesh, P("data"))) for a in arrays]
  np.testing.assert_allclose(sharded(*put), loss(*arrays), rtol=1e-5)
  argnums = tuple(range(len(arrays)))
  g8 = jax.jit(jax.grad(sharded, argnums))(*put)
  for a, b in zip(g8, jax.grad(loss, argnums)(*arrays), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=atol)


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


@pytest.mark.parametrize("name,value", [("nt_xent", 0.1), ("nt_xent", 0.5), ("dcl", 0.1),
                                        ("dcl", 0.5), ("nt_logistic", 0.2),
                                        ("margin_triplet", 0.5), ("margin_triplet", 1.2)])
def test_matches_loop_reference(name, value):
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  got = float(_simclr_loss(name, jnp.asarray(z1), jnp.asarray(z2), value))
  expected = np.mean([_PER_ANCHOR[name](pos, negs, value) for pos, negs in _pairs(z1, z2)])
  assert got == pytest.approx(expected, rel=1e-5)


def test_dcl_nt_logistic_and_margin_triplet_hand_worked():
  # nt_xent's two pairs: a=(1,0), a'=(1,0), b=(0,1), b'=(0,1). Every anchor has a
  # positive of cosine 1 and two negatives of cosine 0.
  z1 = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  z2 = jnp.array([[2.0, 0.0], [0.0, 3.0]])
  # DCL: -1/tau + log(e^0 + e^0).
  for tau in (1.0, 0.5):
    assert float(losses.dcl(z1, z2, temperature=tau)) == pytest.approx(np.log(2) - 1 / tau)
  # NT-Logistic, tau = 1: -log sigmoid(1) - log sigmoid(-0) = log(1 + 1/e) + log 2.
  got = float(losses.nt_logistic(z1, z2, temperature=1.0))
  assert got == pytest.approx(np.log(1 + 1 / np.e) + np.log(2), rel=1e-6)
  # Margin triplet: max(0 - 1 + m, 0): nothing below m = 1, then m - 1.
  assert float(losses.margin_triplet(z1, z2, margin=0.5)) == pytest.approx(0.0, abs=1e-7)
  assert float(losses.margin_triplet(z1, z2, margin=1.5)) == pytest.approx(0.5, rel=1e-6)
  # Views a=(1,0), b=(1,1)/sqrt2, a'=(1,0), b'=(0,1), m = 1/2, c = 1/sqrt2:
  #   a and a': positive 1, negatives b (c) and b' (0): (c - 1/2 + 0) / 2 each;
  #   b: positive b' (c), negatives a, a' (c each): 1/2; b': positive c, negatives 0: 0.
  # Mean over the 4 anchors: ((c - 1/2) + 1/2) / 4 = c / 4.
  z1, z2 = jnp.array([[1.0, 0.0], [1.0, 1.0]]), jnp.array([[1.0, 0.0], [0.0, 1.0]])
  got = float(losses.margin_triplet(z1, z2, margin=0.5))
  assert got == pytest.approx(1 / (4 * np.sqrt(2)), rel=1e-6)


def test_perfect_alignment_is_lower_than_random():
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.normal(size=(16, 8)))
  aligned = losses.nt_xent(z, z, temperature=0.1)
  random = losses.nt_xent(z, jnp.asarray(rng.normal(size=(16, 8))), temperature=0.1)
  assert float(aligned) < float(random)


@pytest.mark.parametrize("name", ["nt_xent", "dcl", "nt_logistic", "margin_triplet"])
def test_global_batch_over_8_devices_equals_single_device(name):
  """pmean of the per-device loss == the single-device loss of the whole batch,
  and so are the gradients with respect to the projections."""
  rng = np.random.default_rng(2)
  z1, z2 = (jnp.asarray(rng.normal(size=(32, 16)), jnp.float32) for _ in range(2))
  value = 0.5 if name == "margin_triplet" else 0.2
  _one_and_eight_devices_agree(functools.partial(_simclr_loss, name, value=value), z1, z2)


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
  # Decoupled: the own key leaves the denominator, -1/tau + log(e^0), x 2 tau = -2.
  for tau in (0.5, 0.25):
    assert float(losses.moco_v3_ctr(q, k, temperature=tau, decoupled=True)) == pytest.approx(-2.0)
  # Swapped: -0 + log(e^2), x 2 tau = 2.
  assert float(losses.moco_v3_ctr(q, k[::-1], temperature=0.5, decoupled=True)) == pytest.approx(2.0)


@pytest.mark.parametrize("decoupled", [False, True], ids=["ctr", "dcl"])
def test_moco_v3_ctr_over_8_devices_equals_single_device(decoupled):
  """Keys of the global batch as negatives: pmean of the per-device loss and its
  gradients equal the single-device ones of the whole batch."""
  rng = np.random.default_rng(4)
  q, k = (jnp.asarray(rng.normal(size=(32, 8)), jnp.float32) for _ in range(2))
  _one_and_eight_devices_agree(
      functools.partial(losses.moco_v3_ctr, temperature=0.2, decoupled=decoupled), q, k)


# ---------------------------------------------------------------------- VICReg


def _reference_vicreg(z1, z2, sim, std, cov, eps=1e-4):
  """VICReg's three terms as the paper defines them, loops in float64."""
  z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
  n, d = z1.shape
  invariance = sum((z1[b, i] - z2[b, i]) ** 2 for b in range(n) for i in range(d)) / (n * d)
  variance = covariance = 0.0
  for z in (z1, z2):
    mean = [sum(z[b, i] for b in range(n)) / n for i in range(d)]
    c = [[sum((z[b, i] - mean[i]) * (z[b, j] - mean[j]) for b in range(n)) / (n - 1)
          for j in range(d)] for i in range(d)]
    variance += sum(max(0.0, 1 - np.sqrt(c[i][i] + eps)) for i in range(d)) / d / 2
    covariance += sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
  return sim * invariance + std * variance + cov * covariance


def test_vicreg_hand_worked():
  # z1 columns (1,3), (2,0): means (2,1), centred rows (-1,1), (1,-1); variances
  # (n - 1 = 1) 2 and 2, covariance -2. z2 columns (1,3), (0,2): centred (-1,-1),
  # (1,1), covariance +2. Invariance: mean of (0,2,0,-2)^2 = 2. Standard deviations
  # sqrt(2) > 1: no variance term. Covariance: (2 (-2)^2) / 2 + (2 (2)^2) / 2 = 8.
  z1, z2 = jnp.array([[1.0, 2.0], [3.0, 0.0]]), jnp.array([[1.0, 0.0], [3.0, 2.0]])
  assert float(losses.vicreg(z1, z2)) == pytest.approx(25 * 2 + 8, rel=1e-6)
  assert float(losses.vicreg(z1, z2, sim_coeff=1.0, cov_coeff=0.5)) == pytest.approx(2 + 4)
  # Scaled by 0.1: invariance 0.02, variances 0.02, so each dimension's hinge is
  # 1 - sqrt(0.02 + eps); covariance terms 2 (0.02^2) / 2 twice.
  small = float(losses.vicreg(0.1 * z1, 0.1 * z2))
  expected = 25 * 0.02 + 25 * (1 - np.sqrt(0.02 + 1e-4)) + 2 * 0.02 ** 2 * 2 / 2
  assert small == pytest.approx(expected, rel=1e-5)
  # A collapsed batch: no variance at all, the hinge at its maximum 1 - sqrt(eps).
  flat = jnp.ones((4, 3))
  assert float(losses.vicreg(flat, flat)) == pytest.approx(25 * (1 - 1e-2), rel=1e-5)


def test_vicreg_matches_loop_reference():
  rng = np.random.default_rng(5)
  z1, z2 = rng.normal(size=(6, 4)), 0.3 * rng.normal(size=(6, 4))  # z2's hinge is active
  got = float(losses.vicreg(jnp.asarray(z1), jnp.asarray(z2), sim_coeff=2.0, std_coeff=3.0,
                            cov_coeff=0.5))
  assert got == pytest.approx(_reference_vicreg(z1, z2, 2.0, 3.0, 0.5), rel=1e-5)


def test_vicreg_over_8_devices_equals_single_device():
  """Variance and covariance over the global batch: the same value on every device,
  the single-device loss, with the same gradients."""
  rng = np.random.default_rng(6)
  z1, z2 = (jnp.asarray(s * rng.normal(size=(32, 6)), jnp.float32) for s in (1.0, 0.3))
  _one_and_eight_devices_agree(losses.vicreg, z1, z2, per_device=False, atol=1e-6)
