"""BYOL: the normalised-MSE loss by hand, the target's rate and update, and the
same training steps on 1 and on 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import byol as byol_config
from cvrl_jax import losses, methods
from cvrl_jax.methods import base
from helpers import preset_shapes, same_on_one_and_eight_devices, tiny_vit_config, train_steps


def test_hand_worked_loss():
  # Rows: p=(1,0) vs z=(0,3): cos 0, 2 - 0 = 2; p=(1,1) vs z=(2,0): cos 1/sqrt(2),
  # 2 - sqrt(2). l is their mean; scale never matters.
  # l(p, z) is half the symmetric loss with (p, z) on both sides.
  p, z = jnp.array([[1.0, 0.0], [1.0, 1.0]]), jnp.array([[0.0, 3.0], [2.0, 0.0]])
  l = lambda p, z: 0.5 * float(losses.byol_loss(p, p, z, z))
  assert l(p, z) == pytest.approx((4 - np.sqrt(2)) / 2, rel=1e-6)
  # It is the squared distance of the unit vectors: |(1,0) - (0,1)|^2 = 2.
  assert l(p[:1], z[:1]) == pytest.approx(2.0, rel=1e-6)
  # Symmetric: l(p1, z2) + l(p2, z1); here p2 = z1's direction gives 0.
  loss = losses.byol_loss(p1=p, p2=2 * z, z1=z, z2=z)
  assert float(loss) == pytest.approx((4 - np.sqrt(2)) / 2, rel=1e-6)


def test_targets_are_not_differentiated():
  rng = np.random.default_rng(0)
  p1, p2, z1, z2 = (jnp.asarray(rng.normal(size=(4, 3))) for _ in range(4))
  grads = jax.grad(losses.byol_loss, argnums=(0, 1, 2, 3))(p1, p2, z1, z2)
  assert all(float(jnp.abs(g).max()) > 0 for g in grads[:2])
  assert all(float(jnp.abs(g).max()) == 0 for g in grads[2:])


def test_tau_rises_from_tau0_to_one_on_a_half_cosine():
  method = methods.get_method(byol_config.get_config("imagenet"), 1000, 100)
  taus = [float(method.momentum(s)) for s in (0, 50, 100)]
  assert taus == pytest.approx([0.996, 0.998, 1.0])
  assert byol_config.get_config("cifar10").byol.tau == 0.99


def test_target_is_an_ema_of_the_online_network():
  c = byol_config.get_config("cpu")
  c.model.update(name="vit", width=16, depth=1, num_heads=2, patch_size=8)
  method = methods.get_method(c, 10, 100)
  params, batch_stats, extra = method.init(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 3)))
  assert set(extra["key_params"]) == {"encoder", "head"}  # no predictor, no probe
  moved = jax.tree.map(lambda x: x + 1.0, params)
  new = method.after_update(moved, batch_stats, extra, jnp.asarray(0))
  tau = float(method.momentum(1))
  for old, new_leaf in zip(jax.tree.leaves(extra["key_params"]),
                           jax.tree.leaves(new["key_params"])):
    np.testing.assert_allclose(new_leaf, old + (1 - tau), rtol=1e-5, atol=1e-6)


def test_one_and_eight_devices_give_the_same_steps():
  """Global BN per view on both networks, the target's EMA: the same on any mesh."""
  config = tiny_vit_config(byol_config)
  states, history = same_on_one_and_eight_devices(lambda n: train_steps(config, n))
  assert all(0.0 <= m["loss"] <= 8.0 for m in history)
  assert [m["tau"] for m in history] == pytest.approx(
      [float(base.cosine_momentum(s, 3, 0.9)) for s in range(3)])
  online, target = states[-1].params["encoder"], states[-1].extra["key_params"]["encoder"]
  assert any(np.abs(a - b).max() > 0 for a, b in zip(jax.tree.leaves(online),
                                                     jax.tree.leaves(target)))


def test_every_preset_builds():
  for c, params, _ in preset_shapes(byol_config):
    # BYOL's projector has no BN on its output (MoCo v3's has).
    assert set(params["head"]) == {"dense_0", "bn_0", "dense_1"}
    assert params["predictor"]["dense_1"]["kernel"].shape[-1] == c.head.output_dim
