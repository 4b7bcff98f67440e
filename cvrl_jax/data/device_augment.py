"""Colour jitter, grayscale, blur and solarize of the views on the accelerator, in JAX.

At 224 px these ops are ~80% of the host's tf.data time, more than a 16-core host
can feed one GPU. With ``config.augment.on_device`` the host only decodes, crops
and flips (uint8 views, 4x less transfer) and the train step runs the rest of
each view's recipe here, per example (``vmap``), as DeepMind's BYOL does.

Op by op the semantics are ``augment.py``'s (tf.image's): the same factor ranges,
random order of the colour ops, clipping to [0, 1] after each, hue shifted like
``tf.image.adjust_hue``, separable reflect-padded blur with the kernel size of
``augment.blur_kernel_size``; the tests compare each op with its TF counterpart.
The random draws are JAX's, not TF's, so the views differ from the host path's
while following the same distribution.

Keys: each example's uint32[2] ``aug_seed`` (threefry key data, from the host's
stateless per-example seed) -> ``fold_in`` the view -> one sub-key per stage ->
one per op. A view depends on its example alone, not on how the batch is split
over devices, and a resumed run redraws the same views.

Imports no TensorFlow (``step.py`` runs on accelerator hosts without it).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax import config as config_lib

KEY_IMPL = "threefry2x32"  # aug_seed is this implementation's raw key data
SEED_SHAPE = (2,)
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale's
BLUR_SIGMA = (0.1, 2.0)  # augment.random_blur's default range
SOLARIZE_THRESHOLD = 0.5

BatchFn = Callable[[dict], dict]


@dataclasses.dataclass(frozen=True)
class ViewRecipe:
  """The device part of one view's augmentation (Python constants, as in augment.py):
  colour jitter (brightness, contrast, saturation, hue) with its probability, and
  the probabilities of the other ops."""
  jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2)
  color_p: float = 0.8
  grayscale_p: float = 0.2
  blur_p: float = 0.5
  solarize_p: float = 0.0


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


# The ablations (SimCLR figure 4) that only ``augment.simclr_view`` implements.
HOST_ONLY_KEYS = ("rotate_p", "cutout_p", "noise_p", "sobel_p")


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether ``config.augment.on_device`` is on; refuses it with multi-crop or with
  an ablation of ``HOST_ONLY_KEYS`` on."""
  if not config.augment.on_device:
    return False
  if config.multicrop.num_small:
    raise ValueError(
        "config.augment.on_device=True does not support multi-crop yet "
        f"(multicrop.num_small={config.multicrop.num_small}): run with "
        "--config.augment.on_device=false, or --config.multicrop.num_small=0.")
  for key in HOST_ONLY_KEYS:
    if config.augment[key]:
      raise ValueError(
          f"config.augment.{key}={config.augment[key]}: this ablation runs in tf.data "
          "only, not with config.augment.on_device=True: run with "
          f"--config.augment.on_device=False, or --config.augment.{key}=0.0.")
  return True


def batch_shapes(config: ml_collections.ConfigDict, batch: int) -> dict:
  """Shapes and dtypes of the pipeline's train batches (views only) as the step gets
  them: with ``augment.on_device``, uint8 views and the per-example ``aug_seed``.
  For the benchmarks, which compile the step without reading data."""
  size, on_device = config.image_size, enabled(config)
  view = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8 if on_device else jnp.float32)
  shapes = {"views": (view,) * config.num_views,
            "label": jax.ShapeDtypeStruct((batch,), jnp.int32)}
  if on_device:
    shapes["aug_seed"] = jax.ShapeDtypeStruct((batch, *SEED_SHAPE), jnp.uint32)
  return shapes


def view_recipes(config: ml_collections.ConfigDict) -> tuple[ViewRecipe, ...]:
  """One recipe per view: per-view blur / solarize read like the host pipeline's."""
  aug = config.augment
  return tuple(
      ViewRecipe(jitter=config_lib.jitter_strengths(aug), color_p=float(aug.color_p),
                 grayscale_p=float(aug.grayscale_p),
                 blur_p=float(config_lib.view_setting(config, "blur_p", v)),
                 solarize_p=float(config_lib.view_setting(config, "solarize_p", v)))
      for v in range(config.num_views))


# ---------------------------------------------------------------------------
# The ops on one image [H, W, 3] float32 in [0, 1] (tf.image semantics, no clipping)
# ---------------------------------------------------------------------------


def clip(x: jax.Array) -> jax.Array:
  return jnp.clip(x, 0.0, 1.0)


def adjust_brightness(x: jax.Array, factor) -> jax.Array:
  """Multiplies (SimCLR v2's brightness; augment.py multiplies, not adds)."""
  return x * factor


def adjust_contrast(x: jax.Array, factor) -> jax.Array:
  """tf.image.adjust_contrast: each channel scaled about its spatial mean."""
  mean = jnp.mean(x, axis=(-3, -2), keepdims=True)
  return (x - mean) * factor + mean


def _value_and_chroma(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  v = jnp.max(x, axis=-1, keepdims=True)
  return v, v - jnp.min(x, axis=-1, keepdims=True)


def adjust_saturation(x: jax.Array, factor) -> jax.Array:
  """tf.image.adjust_saturation: HSV saturation times ``factor``, clipped to [0, 1].

  In closed form: hue and value stay, so each channel keeps its place between
  the pixel's max and min while the chroma scales by min(factor, v / chroma)
  (the clip at saturation 1); no HSV round trip.
  """
  v, chroma = _value_and_chroma(x)
  ratio = jnp.minimum(factor, v / jnp.where(chroma > 0, chroma, 1.0))
  return v - (v - x) * jnp.where(chroma > 0, ratio, 1.0)


def _hue6(x: jax.Array, v: jax.Array, chroma: jax.Array) -> jax.Array:
  """Hue in [0, 6) (TF's adjust_hue range); 0 for grey pixels."""
  r, g, b = x[..., 0:1], x[..., 1:2], x[..., 2:3]
  safe = jnp.where(chroma > 0, chroma, 1.0)
  h = jnp.where(v == r, (g - b) / safe,
                jnp.where(v == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
  return jnp.where(chroma > 0, jnp.mod(h, 6.0), 0.0)


def adjust_hue(x: jax.Array, delta) -> jax.Array:
  """tf.image.adjust_hue: hue rotated by ``delta`` turns, max and min kept."""
  v, chroma = _value_and_chroma(x)
  h = jnp.mod(_hue6(x, v, chroma) + 6.0 * delta, 6.0)
  k = jnp.mod(jnp.array([5.0, 3.0, 1.0], x.dtype) + h, 6.0)  # r, g, b
  return v - chroma * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def rgb_to_grayscale(x: jax.Array) -> jax.Array:
  """tf.image.rgb_to_grayscale, kept as 3 channels."""
  gray = x @ jnp.asarray(GRAY_WEIGHTS, x.dtype)
  return jnp.repeat(gray[..., None], 3, axis=-1)


def blur_radius(side: int) -> int:
  """Half of augment.blur_kernel_size(side): 10% of the side, odd, at least 3."""
  return max(int(side) // 20, 1)


def gaussian_blur(x: jax.Array, sigma, radius: int) -> jax.Array:
  """Separable Gaussian blur, reflect padding (augment.gaussian_blur), unclipped.

  Written as sums of shifted slices: XLA fuses them, and a per-example sigma
  needs no batched-kernel convolution under vmap.
  """
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  w = jnp.exp(-jnp.square(taps) / (2.0 * jnp.square(jnp.asarray(sigma, jnp.float32))))
  w = w / jnp.sum(w)
  height, width = x.shape[0], x.shape[1]
  padded = jnp.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
  vertical = sum(w[i] * padded[i:i + height] for i in range(2 * radius + 1))
  return sum(w[i] * vertical[:, i:i + width] for i in range(2 * radius + 1))


def solarize(x: jax.Array, threshold: float = SOLARIZE_THRESHOLD) -> jax.Array:
  """Inverts pixels at or above ``threshold`` (augment.random_solarize)."""
  return jnp.where(x < threshold, x, 1.0 - x)


# ---------------------------------------------------------------------------
# Random stages on one image, keyed
# ---------------------------------------------------------------------------


def _uniform(key: jax.Array, lo, hi) -> jax.Array:
  return jax.random.uniform(key, (), jnp.float32, lo, hi)


def _random_apply(fn: Callable[[jax.Array], jax.Array], x: jax.Array, key: jax.Array,
                  p: float) -> jax.Array:
  """``fn(x)`` with probability ``p``; constant 0 / 1 draw no coin (as augment.py)."""
  if p <= 0.0:
    return x
  if p >= 1.0:
    return fn(x)
  return jnp.where(jax.random.uniform(key, ()) < p, fn(x), x)


def color_jitter(x: jax.Array, key: jax.Array, recipe: ViewRecipe) -> jax.Array:
  """augment.color_jitter_explicit: active ops in a random order, clipped after each."""
  strengths = recipe.jitter
  if any(s < 0 for s in strengths):
    raise ValueError(f"Colour jitter strengths must be >= 0, got {strengths}.")
  coin, order_key, *op_keys = jax.random.split(key, 6)
  factor = lambda k, s: _uniform(k, max(1.0 - s, 0.0), 1.0 + s)
  shift = lambda k, s: _uniform(k, -min(s, 0.5), min(s, 0.5))  # hue: an additive shift
  ops = []  # values drawn up front, one key per op, whatever the order
  for strength, adjust, draw, op_key in zip(
      strengths, (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue),
      (factor, factor, factor, shift), op_keys):
    if strength:
      ops.append(functools.partial(lambda y, adjust, v: clip(adjust(y, v)), adjust=adjust,
                                   v=draw(op_key, strength)))
  if not ops:
    return x

  def jitter(y: jax.Array) -> jax.Array:
    if len(ops) == 1:
      return ops[0](y)
    order = jnp.argsort(jax.random.uniform(order_key, (len(ops),)))
    for i in range(len(ops)):
      y = jax.lax.switch(order[i], ops, y)
    return y

  return _random_apply(jitter, x, coin, recipe.color_p)


def random_blur(x: jax.Array, key: jax.Array, p: float) -> jax.Array:
  coin, sigma_key = jax.random.split(key)
  radius = blur_radius(x.shape[0])
  return _random_apply(
      lambda y: clip(gaussian_blur(y, _uniform(sigma_key, *BLUR_SIGMA), radius)), x, coin, p)


def augment_view(x: jax.Array, key: jax.Array, recipe: ViewRecipe) -> jax.Array:
  """Colour jitter -> grayscale -> blur -> solarize of one cropped, flipped view."""
  color_key, gray_key, blur_key, solarize_key = jax.random.split(key, 4)
  x = color_jitter(x, color_key, recipe)
  x = _random_apply(lambda y: clip(rgb_to_grayscale(y)), x, gray_key, recipe.grayscale_p)
  x = random_blur(x, blur_key, recipe.blur_p)
  return _random_apply(solarize, x, solarize_key, recipe.solarize_p)


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------


def to_float(images: jax.Array) -> jax.Array:
  """uint8 -> float32 in [0, 1]; float input is taken as already scaled."""
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(jnp.float32) * (1.0 / 255.0)
  return images.astype(jnp.float32)


def augment_views(views: Sequence[jax.Array], seeds: jax.Array,
                  recipes: Sequence[ViewRecipe]) -> tuple[jax.Array, ...]:
  """Each view ``[B, S, S, 3]`` augmented per example; ``seeds``: uint32 ``[B, 2]``."""
  if len(recipes) < len(views):
    raise ValueError(f"{len(views)} views but {len(recipes)} recipes.")
  keys = jax.random.wrap_key_data(seeds.astype(jnp.uint32), impl=KEY_IMPL)
  out = []
  for v, (images, recipe) in enumerate(zip(views, recipes)):
    view_keys = jax.vmap(lambda k, v=v: jax.random.fold_in(k, v))(keys)
    out.append(jax.vmap(lambda x, k, r=recipe: augment_view(x, k, r))(to_float(images),
                                                                     view_keys))
  return tuple(out)


def batch_fn(config: ml_collections.ConfigDict) -> Optional[BatchFn]:
  """The step's per-device batch transform, or None when on_device is off.

  Replaces the uint8 ``views`` by augmented float32 ones and drops ``aug_seed``;
  everything else (labels) passes through, so methods never see the difference.
  """
  if not enabled(config):
    return None
  recipes = view_recipes(config)

  def fn(batch: dict) -> dict:
    batch = dict(batch)
    seeds = batch.pop("aug_seed")
    batch["views"] = augment_views(batch["views"], seeds, recipes)
    return batch

  return fn
