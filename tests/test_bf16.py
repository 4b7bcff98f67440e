"""Mixed precision: bfloat16 compute, float32 parameters, statistics, features and loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvrl_jax import train
from cvrl_jax import models
from cvrl_jax.models import ResNet, ViT
from helpers import losses_by_step, restore, tiny_config


def test_auto_is_float32_off_tpu_and_bad_names_are_refused():
  assert jax.default_backend() == "cpu"
  assert models.compute_dtype("auto") == jnp.float32
  assert models.compute_dtype("bfloat16") == jnp.bfloat16
  with pytest.raises(ValueError, match="model.dtype='fp16'.*'bfloat16'"):
    models.compute_dtype("fp16")


@pytest.mark.parametrize("model", [
    ResNet(depth=18, width_multiplier=0.125, stem="cifar", dtype=jnp.bfloat16),
    ViT(width=32, depth=2, num_heads=2, patch_size=4, dtype=jnp.bfloat16),
])
def test_bf16_model_convolves_in_bf16_and_keeps_float32_state(model):
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 16, 16, 3)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, images, train=False))(variables))
  assert "bf16" in jaxpr and ("conv_general_dilated" in jaxpr or "dot_general" in jaxpr)
  out = model.apply(variables, images, train=False)
  assert out.dtype == jnp.float32
  ref = model.clone(dtype=jnp.float32).apply(variables, images, train=False)
  np.testing.assert_allclose(out, ref, rtol=0.05, atol=0.05 * float(jnp.abs(ref).max()))


def test_bf16_and_f32_runs_agree_for_a_few_steps(tmp_path):
  """The same tiny SimCLR run in both precisions: close losses, float32 checkpoints."""
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(num_devices=8)
    config.model.dtype = dtype
    # A gentler rate than the preset's: at LARS 4.0 this tiny network's trajectory is
    # chaotic (gradient norm ~15), and any rounding difference grows within steps.
    config.optimizer.base_lr = 0.5
    summary = train.train_and_evaluate(config, str(tmp_path / dtype))
    assert np.isfinite(summary["loss"])
  f32, bf16 = losses_by_step(tmp_path / "float32"), losses_by_step(tmp_path / "bfloat16")
  assert sorted(bf16) == sorted(f32) == [1, 2, 3, 4]
  assert bf16[1] == pytest.approx(f32[1], rel=5e-3)  # the same weights: forward only
  for step in f32:
    assert bf16[step] == pytest.approx(f32[step], rel=1e-2), step
  assert f32 != bf16  # bf16 really ran: not bit-identical
  params = restore(tmp_path / "bfloat16", 4)["params"]
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}


@pytest.mark.parametrize("model", [
    ResNet(depth=18, width_multiplier=0.125, stem="cifar"),
    ViT(width=32, depth=2, num_heads=2, patch_size=4),
])
def test_remat_changes_memory_not_gradients(model):
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(size=(8, 16, 16, 3)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  # A fixed random direction of the features: the ViT ends in a LayerNorm, whose
  # output's squared norm is a constant (the width), so sum(out ** 2) would have
  # gradients of rounding noise only, different under any two compiles.
  direction = jnp.asarray(rng.normal(size=model.apply(variables, images, train=False).shape),
                          jnp.float32)

  def grads(m):
    def loss(params):
      out = m.apply({**variables, "params": params}, images, train=False)
      return jnp.sum(out * direction)
    return jax.jit(jax.grad(loss))(variables["params"])

  for a, b in zip(jax.tree.leaves(grads(model)), jax.tree.leaves(grads(model.clone(remat=True)))):
    # Rounding scales with the leaf's largest entry (up to ~10 here); an unsaved or
    # wrongly recomputed activation changes gradients by far more.
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(b).max()))


def test_memory_benchmark_shows_remat_saving_activation_memory():
  from benchmarks import memory
  config = tiny_config()
  config.model.remat = False
  without = memory.step_memory(config, 32, num_classes=10)
  config.model.remat = True
  with_remat = memory.step_memory(config, 32, num_classes=10)
  assert with_remat["arguments_mib"] == pytest.approx(without["arguments_mib"])
  assert with_remat["peak_mib"] < 0.95 * without["peak_mib"]
