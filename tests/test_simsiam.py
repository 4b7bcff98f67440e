"""SimSiam: its loss against hand-worked values, the stop-gradient, and the same
training steps on 1 and on 8 devices. ``one_and_eight_devices`` is shared with
the tests of the other Siamese methods (BYOL, Barlow Twins, SupCon, NNCLR)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import simsiam as simsiam_config
from cvrl_jax import methods, optim, parallel, train
from cvrl_jax.methods import simsiam


def tiny_config(module, base_lr: float = 1.0):
  """``module``'s cpu preset on a one-block ViT (fast to compile; the heads' BN
  still runs across devices), 16 px, batch 16, plain SGD without weight decay:
  the parameters then show any error in the gradients' scale, which LARS's
  trust ratio would hide."""
  c = module.get_config("cpu")
  c.model.update(name="vit", width=32, depth=1, num_heads=2, patch_size=4)
  c.update(image_size=16, batch_size=16)
  c.head.update(hidden_dim=32, output_dim=16)
  if "predictor" in c:
    c.predictor.hidden_dim = 32
  c.optimizer.update(name="sgd", base_lr=base_lr, weight_decay=0.0, warmup_epochs=0.0)
  return c


def run_steps(config, num_devices: int, steps: int = 3):
  """``steps`` train steps on fixed random batches (4 classes, so labels repeat);
  returns the final state as numpy and each step's metrics."""
  mesh = parallel.make_mesh(num_devices)
  method = methods.get_method(config, 10, steps)
  tx, _ = optim.create_optimizer(config, config.batch_size, steps, steps)
  state = train.create_train_state(method, tx, jax.random.PRNGKey(0),
                                   (config.batch_size // num_devices, 16, 16, 3), mesh)
  step = train.make_train_step(method, tx, mesh)
  rng, history = np.random.default_rng(0), []
  for _ in range(steps):
    batch = {"views": tuple(rng.uniform(size=(config.batch_size, 16, 16, 3)).astype(np.float32)
                            for _ in range(2)),
             "label": rng.integers(0, 4, config.batch_size).astype(np.int32)}
    state, metrics = step(state, parallel.host_to_global(batch, mesh),
                          jax.device_put(jax.random.PRNGKey(1), parallel.replicated(mesh)))
    history.append({k: float(v.compute()) for k, v in metrics.items()})
  return jax.tree.map(np.asarray, state), history


def one_and_eight_devices(module, base_lr: float = 1.0):
  """Runs ``module``'s tiny config on 1 and on 8 devices and asserts the same
  metrics at every step and the same final parameters, BN statistics and extra
  state. Returns the 8-device (state, history)."""
  assert jax.device_count() == 8
  config = tiny_config(module, base_lr)
  (s1, h1), (s8, h8) = run_steps(config, 1), run_steps(config, 8)
  # Tolerances as tests/test_moco.py's: the meshes reduce in different orders,
  # and SGD on a tiny model amplifies the rounding a little every step; a wrong
  # global quantity or gradient scale differs by far more.
  for step, (m1, m8) in enumerate(zip(h1, h8)):
    assert np.isfinite(m1["loss"]), step
    assert m8["loss"] == pytest.approx(m1["loss"], rel=2e-4), step
    assert m8 == pytest.approx(m1, rel=1e-3, abs=1e-5), step
  for name in ("params", "batch_stats", "extra"):
    for a, b in zip(jax.tree.leaves(getattr(s1, name)), jax.tree.leaves(getattr(s8, name)),
                    strict=True):
      # Rounding scales with a leaf's largest entry (a ViT class token reaches ~14);
      # NNCLR's unit-length queue rows differ by up to 2e-4. A queue in the wrong
      # order or a local statistic differs by O(1).
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=5e-4 * max(1.0, np.abs(b).max()),
                                 err_msg=name)
  return s8, h8


def test_hand_worked_loss():
  # D(p1, z2): p1=(1,1), z2=(3,0): cos 1/sqrt(2). D(p2, z1): p2=(1,0), z1=(-2,0): cos -1.
  # L = (-1/sqrt(2) + 1) / 2, for any scale of the vectors.
  p1, p2 = jnp.array([[1.0, 1.0]]), jnp.array([[1.0, 0.0]])
  z1, z2 = jnp.array([[-2.0, 0.0]]), jnp.array([[3.0, 0.0]])
  expected = 0.5 * (-1 / np.sqrt(2) + 1)
  assert float(simsiam.simsiam_loss(p1, p2, z1, z2)) == pytest.approx(expected, rel=1e-6)
  # Predictions aligned with the other view's projections: the minimum, -1.
  assert float(simsiam.simsiam_loss(z2, z1, z1, 5 * z2)) == pytest.approx(-1.0, rel=1e-6)


def test_projections_are_not_differentiated():
  rng = np.random.default_rng(0)
  p1, p2, z1, z2 = (jnp.asarray(rng.normal(size=(4, 3))) for _ in range(4))
  grads = jax.grad(simsiam.simsiam_loss, argnums=(0, 1, 2, 3))(p1, p2, z1, z2)
  assert all(float(jnp.abs(g).max()) > 0 for g in grads[:2])
  assert all(float(jnp.abs(g).max()) == 0 for g in grads[2:])


def test_global_std_is_zero_when_collapsed():
  z = jnp.tile(jnp.array([[0.6, 0.8]]), (8, 1))
  assert float(simsiam.global_std(z, None)) == pytest.approx(0.0, abs=1e-6)
  # Rows +-e1: the first dimension has std 1, the second 0: mean 0.5.
  assert float(simsiam.global_std(jnp.array([[1.0, 0], [-1, 0]]), None)) == pytest.approx(0.5)


def test_one_and_eight_devices_give_the_same_steps():
  _, history = one_and_eight_devices(simsiam_config)
  assert all(-1.0 <= m["loss"] <= 1.0 for m in history)


def test_every_preset_builds():
  """Shapes only (jax.eval_shape): networks, state and optimiser of every variant."""
  for variant in simsiam_config.VARIANTS:
    c = simsiam_config.get_config(variant)
    params = build(c)
    assert params["predictor"]["dense_1"]["kernel"].shape[-1] == c.head.output_dim


def build(c):
  """The parameters of ``c``'s method (shapes), after building its optimiser."""
  method = methods.get_method(c, 1000, 1000)
  images = jax.ShapeDtypeStruct((2, c.image_size, c.image_size, 3), jnp.float32)
  params, _, _ = jax.eval_shape(method.init, jax.random.PRNGKey(0), images)
  tx, _ = optim.create_optimizer(c, c.batch_size, 1000, 100)
  jax.eval_shape(tx.init, params)
  return params
