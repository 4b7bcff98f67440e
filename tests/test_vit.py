"""ViT encoders: sizes of the published models, output, frozen patch projection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvrl_jax import config as config_lib
from cvrl_jax import optim
from cvrl_jax import models
from cvrl_jax.models import vit


def _num_params(model, image_size=224):
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, image_size, image_size, 3)), train=False)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("name,expected", [("small", 21_590_016), ("base", 85_647_360)])
def test_parameter_counts_match_timm_without_head_and_position_embedding(name, expected):
  # timm's vit_small/base_patch16_224 have 22,050,664 / 86,567,656 parameters;
  # less the 1000-class head and the (here fixed) 197-token position embedding.
  assert _num_params(vit.ViT(**vit.VARIANTS[name], patch_size=16)) == expected


def tiny_vit_config(**model):
  c = config_lib.base_config("simclr")
  c.model.update(name="vit", width=32, depth=1, num_heads=2, patch_size=4, **model)
  c.optimizer.update(name="adamw", base_lr=1.5e-4, weight_decay=0.1)
  return c


def test_tiny_vit_gives_class_token_features_from_the_config():
  c = tiny_vit_config()
  model = models.make_encoder(c.model, axis_name=None)
  images = jax.random.uniform(jax.random.PRNGKey(1), (3, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  assert set(variables) == {"params"}  # no BatchNorm
  h = model.apply(variables, images, train=True)
  assert h.shape == (3, 32) and np.isfinite(h).all()
  # LayerNorm output: zero mean, unit variance per image.
  np.testing.assert_allclose(h.mean(axis=1), 0.0, atol=1e-5)


def test_sincos_position_embedding():
  pe = vit.sincos_2d((2, 3), 8)
  assert pe.shape == (6, 8)
  # Patch (row 1, col 2) is token 5: sin/cos of the row, then of the column.
  omega = np.array([1.0, 0.01])
  np.testing.assert_allclose(pe[5], np.concatenate([np.sin(omega), np.cos(omega),
                                                    np.sin(2 * omega), np.cos(2 * omega)]),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="divisible by 4"):
    vit.sincos_2d((2, 2), 6)


def test_frozen_patch_projection_gets_no_gradient_and_no_weight_decay():
  c = tiny_vit_config(frozen_patch_embed=True)
  model = models.make_encoder(c.model, axis_name=None)
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))
  params = model.init(jax.random.PRNGKey(0), images, train=False)["params"]
  grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, images, train=True) ** 3))(params)
  assert all(not np.any(g) for g in jax.tree.leaves(grads["patch_embed"]))
  assert np.any(grads["block1"]["mlp_1"]["kernel"])

  tx, _ = optim.create_optimizer(c, 256, total_steps=10, steps_per_epoch=1)
  opt_state, new = tx.init(params), params
  for _ in range(3):
    updates, opt_state = tx.update(grads, opt_state, new)
    new = jax.tree.map(lambda p, u: p + u, new, updates)
  for a, b in zip(jax.tree.leaves(params["patch_embed"]), jax.tree.leaves(new["patch_embed"])):
    np.testing.assert_array_equal(a, b)
  assert np.abs(new["block1"]["mlp_1"]["kernel"] - params["block1"]["mlp_1"]["kernel"]).max() > 0
