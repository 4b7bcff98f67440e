"""Device augmentation: each JAX op against augment.py's tf.image op, the composed
view's probabilities, keys, 1 vs 8 devices, the on_device pipeline and a train step."""

import dataclasses
import itertools

import jax
import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import PartitionSpec as P

from configs import byol, dino, simclr_v2
from conftest import SHARED_TFDS
from cvrl_jax import parallel, train
from cvrl_jax.data import augment, device_augment as da, pipeline
from helpers import losses_by_step, tiny_config

SIDE = 24


def image(seed: int = 0, side: int = SIDE) -> np.ndarray:
  x = np.random.default_rng(seed).uniform(0, 1, (side, side, 3)).astype(np.float32)
  x[0, :3] = [[0.5, 0.5, 0.5], [0.9, 0.9, 0.1], [0.0, 0.0, 0.0]]  # grey, a tie, black
  return x


def close(jax_out, tf_out, atol=1e-5):
  np.testing.assert_allclose(np.asarray(jax_out), np.asarray(tf_out), atol=atol, rtol=0)


# ---------------------------------------------------------------------------
# Op by op against tf.image (augment.py's ops, fixed parameters)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.2, 1.0, 1.8])
def test_brightness_contrast_saturation_match_tf(factor):
  x = image()
  close(da.clip(da.adjust_brightness(x, factor)), augment.clip(x * factor))
  close(da.adjust_contrast(x, factor), tf.image.adjust_contrast(x, factor))
  close(da.adjust_saturation(x, factor), tf.image.adjust_saturation(x, factor))
  close(da.adjust_saturation(x, 0.0), tf.image.adjust_saturation(x, 0.0))


@pytest.mark.parametrize("delta", [-0.5, -0.23, 0.0, 0.1, 0.37, 0.5])
def test_hue_matches_tf_adjust_hue(delta):
  close(da.adjust_hue(image(1), delta), tf.image.adjust_hue(image(1), delta))


def test_grayscale_and_solarize_match_tf():
  x = image(2)
  close(da.rgb_to_grayscale(x), tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 3]))
  on = augment.random_solarize(x, [0, 0], p=1.0)
  close(da.solarize(x), on)


@pytest.mark.parametrize("side", [16, 32, 96, 224])
def test_blur_kernel_size_matches_augment(side):
  assert 2 * da.blur_radius(side) + 1 == augment.blur_kernel_size(side)


@pytest.mark.parametrize("sigma", [0.1, 0.8, 2.0])
def test_blur_at_fixed_sigma_matches_tf(sigma):
  x = image(3, side=40)
  radius = da.blur_radius(40)
  ref = augment.gaussian_blur(tf.constant(x), tf.constant(sigma), radius)
  close(da.clip(da.gaussian_blur(x, sigma, radius)), ref)


def test_recipes_derive_strengths_like_augment_and_read_per_view_settings():
  c = byol.get_config("imagenet")
  r0, r1 = da.view_recipes(c)
  assert r0.jitter == (0.4, 0.4, 0.2, 0.1)
  assert (r0.blur_p, r0.solarize_p, r1.blur_p, r1.solarize_p) == (1.0, 0.0, 0.1, 0.2)
  (s,) = set(da.view_recipes(simclr_v2.get_config("imagenet")))  # strength 1.0
  assert (s.jitter, s.color_p, s.grayscale_p, s.blur_p) == ((0.8, 0.8, 0.8, 0.2), 0.8, 0.2, 0.5)


# ---------------------------------------------------------------------------
# The composed view: probabilities, keys
# ---------------------------------------------------------------------------

OFF = da.ViewRecipe(color_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


def views(recipe, n=64, seed=0, side=SIDE):
  images = np.stack([image(i, side) for i in range(n)])
  seeds = np.random.default_rng(seed).integers(0, 2**32, (n, 2), dtype=np.uint32)
  fn = jax.jit(lambda x, s: da.augment_views((x,), s, (recipe,))[0])
  return images, np.asarray(fn(images, seeds))


def test_p_zero_is_identity_and_p_one_always_changes_the_view():
  x, out = views(OFF)
  np.testing.assert_array_equal(out, x)
  for on in (dict(color_p=1.0), dict(grayscale_p=1.0), dict(solarize_p=1.0)):
    x, out = views(dataclasses.replace(OFF, **on))
    changed = np.abs(out - x).reshape(len(x), -1).max(axis=1) > 1e-3
    assert changed.all(), on
    assert 0.0 <= out.min() and out.max() <= 1.0
  # Blur: every view smoother; a sigma near 0.1 leaves a few nearly unchanged.
  x, out = views(dataclasses.replace(OFF, blur_p=1.0))
  variation = lambda v: np.abs(np.diff(v, axis=1)).reshape(len(v), -1).mean(axis=1)
  assert (variation(out) <= variation(x) + 1e-6).all()
  assert (variation(out) < 0.9 * variation(x)).mean() > 0.7


def test_grayscale_probability_and_statistics():
  x, out = views(da.ViewRecipe(color_p=0.0, grayscale_p=0.25, blur_p=0.0), n=400)
  gray = np.abs(out[..., 0] - out[..., 2]).reshape(len(x), -1).max(axis=1) < 1e-6
  assert 0.18 < gray.mean() < 0.32  # 100 +- 8.7 of 400 expected
  np.testing.assert_array_equal(out[~gray], x[~gray])  # the others untouched


def test_same_seeds_same_views_other_seeds_other_views():
  recipe = da.ViewRecipe()  # SimCLR's full recipe
  _, a = views(recipe, n=8, seed=0)
  _, b = views(recipe, n=8, seed=0)
  _, c = views(recipe, n=8, seed=1)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_views_of_one_example_get_their_own_keys_and_settings():
  config = byol.get_config("imagenet")
  x = np.stack([image(i) for i in range(8)])
  seeds = np.arange(16, dtype=np.uint32).reshape(8, 2)
  v0, v1 = da.augment_views((x, x), seeds, da.view_recipes(config))
  assert not np.allclose(v0, v1)


def test_one_and_eight_devices_give_the_same_views():
  config = byol.get_config("imagenet")
  fn = da.batch_fn(config)
  rng = np.random.default_rng(0)
  batch = {"views": tuple(rng.integers(0, 256, (16, SIDE, SIDE, 3), dtype=np.uint8)
                          for _ in range(2)),
           "aug_seed": rng.integers(0, 2**32, (16, 2), dtype=np.uint32),
           "label": np.arange(16, dtype=np.int32)}

  def run(num_devices):
    mesh = parallel.make_mesh(num_devices)
    step = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=P(parallel.DATA),
                                 out_specs=P(parallel.DATA)))
    return jax.device_get(step(parallel.host_to_global(batch, mesh)))

  one, eight = run(1), run(8)
  assert "aug_seed" not in one and one["views"][0].dtype == np.float32
  np.testing.assert_array_equal(one["label"], eight["label"])
  for a, b in zip(one["views"], eight["views"]):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_on_device_with_multicrop_is_refused_clearly():
  config = dino.get_config("cpu")
  config.augment.on_device = True
  with pytest.raises(ValueError, match="on_device=True does not support multi-crop"):
    da.batch_fn(config)
  assert da.batch_fn(simclr_v2.get_config("cpu")) is None  # off: no transform


# ---------------------------------------------------------------------------
# The input pipeline and the train step with on_device
# ---------------------------------------------------------------------------


def pipeline_config(on_device: bool, **augment):
  c = simclr_v2.get_config("cpu")
  c.data_dir = SHARED_TFDS
  c.num_train_examples = 96
  c.augment.update(on_device=on_device, **augment)
  return c


def take(config, local_batch, n, start_step=0):
  ds = pipeline.train_dataset(config, local_batch, start_step)
  return list(itertools.islice(pipeline.as_numpy(ds), n))


def test_pipeline_on_device_emits_uint8_crops_and_seeds_and_resumes_exactly():
  full = take(pipeline_config(True), 16, 8)
  (batch,) = full[:1]
  v0, v1 = batch["views"]
  assert v0.shape == (16, 32, 32, 3) and v0.dtype == np.uint8
  assert batch["aug_seed"].shape == (16, 2) and batch["aug_seed"].dtype == np.uint32
  assert len(np.unique(batch["aug_seed"], axis=0)) == 16
  # The host path's crops and flips with the colour stages off, rounded to uint8.
  (crops,) = take(pipeline_config(False, color_p=0.0, grayscale_p=0.0, blur_p=(0.0,)), 16, 1)
  for mine, host in zip(batch["views"], crops["views"]):
    np.testing.assert_array_equal(mine, np.round(host * 255).astype(np.uint8))
  np.testing.assert_array_equal(batch["label"], crops["label"])
  # 6 steps per epoch: steps 4..7 cross into epoch 2.
  resumed = take(pipeline_config(True), 16, 4, start_step=4)
  for x, y in zip(full[4:], resumed):
    np.testing.assert_array_equal(x["views"][1], y["views"][1])
    np.testing.assert_array_equal(x["aug_seed"], y["aug_seed"])


def test_train_step_with_on_device_runs_and_matches_on_one_and_eight_devices(tmp_path):
  overrides = dict(total_steps=2, num_train_examples=256)
  configs = [tiny_config(num_devices=n, **overrides) for n in (1, 8)]
  for c in configs:
    c.augment.update(on_device=True, blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2))
  one = train.train_and_evaluate(configs[0], str(tmp_path / "one"))
  train.train_and_evaluate(configs[1], str(tmp_path / "eight"))
  l1, l8 = losses_by_step(tmp_path / "one"), losses_by_step(tmp_path / "eight")
  assert sorted(l1) == [1, 2] and all(np.isfinite(v) and v > 0 for v in l1.values())
  assert np.isfinite(one["grad_norm"])
  for step in l1:
    assert l8[step] == pytest.approx(l1[step], rel=2e-4), step


def test_synthetic_benchmark_batches_and_step_include_the_device_augmentation():
  from benchmarks import throughput
  from cvrl_jax import methods, optim
  c = tiny_config(batch_size=8)
  c.augment.on_device = True
  batch = next(throughput.random_batches(c, 8))
  assert batch["views"][0].dtype == np.uint8 and batch["aug_seed"].dtype == np.uint32
  flops = {}
  for on in (True, False):
    c.augment.on_device = on
    method = methods.get_method(c, 10, 10)
    tx, _ = optim.create_optimizer(c, c.batch_size, 10, 10)
    flops[on] = throughput.step_flops(method, tx, c)
  assert flops[True] > flops[False] > 0


def test_224_px_pretraining_configs_augment_on_the_device_cifar_and_cpu_on_the_host():
  import importlib
  for name in ("simclr_v1", "simclr_v2", "moco_v1", "moco_v2", "moco_v3", "byol", "simsiam",
               "barlow_twins", "supcon", "nnclr", "swav", "dino", "vicreg"):
    module = importlib.import_module(f"configs.{name}")
    variants = getattr(module, "VARIANTS", ("imagenet", "cifar10", "cpu"))
    for variant in variants:
      c = module.get_config(variant)
      # Multi-crop (SwAV, DINO) stays on the host: on_device refuses it.
      expected = c.image_size == 224 and not c.multicrop.num_small
      assert c.augment.on_device == expected, (name, variant)
