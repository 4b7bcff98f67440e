"""VICReg the method: its loss is ``losses.vicreg`` with the configured
coefficients, the same training steps on 1 and on 8 devices, the presets' recipe,
and every preset builds (the loss itself: tests/test_losses.py)."""

import jax.numpy as jnp
import numpy as np
import pytest

from configs import vicreg as vicreg_config
from cvrl_jax import losses, methods
from helpers import preset_shapes, same_on_one_and_eight_devices, tiny_vit_config, train_steps


def test_loss_is_vicreg_with_the_configured_coefficients():
  c = vicreg_config.get_config("cpu")
  c.vicreg.update(sim_coeff=2.0, std_coeff=3.0, cov_coeff=0.5)
  rng = np.random.default_rng(0)
  z1, z2 = (jnp.asarray(rng.normal(size=(8, 4)), jnp.float32) for _ in range(2))
  got = methods.get_method(c, 10, 10).pair_loss(z1, z2, None)
  np.testing.assert_allclose(got, losses.vicreg(z1, z2, sim_coeff=2.0, std_coeff=3.0,
                                                cov_coeff=0.5), rtol=1e-6)
  assert float(got) != pytest.approx(float(losses.vicreg(z1, z2)))


def test_one_and_eight_devices_give_the_same_steps():
  """Variance and covariance over the global batch, BN per view across devices:
  the same losses and states on any mesh."""
  # Barlow Twins' small rate: at 1.0 SGD on the tiny run's large gradients
  # amplifies the two meshes' rounding differences past the tolerance by step 1.
  config = tiny_vit_config(vicreg_config, base_lr=0.05)
  _, history = same_on_one_and_eight_devices(lambda n: train_steps(config, n))
  assert all(m["loss"] > 0 for m in history)


@pytest.mark.parametrize("variant", vicreg_config.VARIANTS)
def test_preset_follows_the_recipe(variant):
  c = vicreg_config.get_config(variant)
  assert c.method == "vicreg" and dict(c.vicreg) == dict(sim_coeff=25.0, std_coeff=25.0,
                                                         cov_coeff=1.0)
  assert not c.head.last_bn
  if variant == "imagenet":
    assert (c.batch_size, c.num_epochs, c.optimizer.base_lr, c.optimizer.weight_decay,
            c.optimizer.warmup_epochs, c.optimizer.name) == (2048, 1000, 0.2, 1e-6, 10.0, "lars")
    assert (c.head.hidden_dim, c.head.output_dim, c.head.num_layers) == (8192, 8192, 3)
  if variant == "cpu":
    assert c.total_steps == 500 and c.batch_size == 128


def test_every_preset_builds():
  for c, params, _ in preset_shapes(vicreg_config):
    # A linear output layer: BN and ReLU on the hidden layers only.
    assert set(params["head"]) == {"dense_0", "bn_0", "dense_1", "bn_1", "dense_2"}
    assert params["head"]["dense_2"]["kernel"].shape[-1] == c.head.output_dim
