"""SimCLR-family image augmentations for tf.data pipelines (one image at a time).

Conventions shared by every function here:

* Images are float32 in [0, 1] with shape ``[H, W, 3]``. Integer images are
  converted with ``tf.image.convert_image_dtype`` for convenience, and every
  function returns float32 clipped to [0, 1].
* Randomness is *stateless*: each random function takes an explicit ``seed``
  (shape ``[2]``, int32 or int64, as for ``tf.random.stateless_uniform``;
  normalised to int64, so both dtypes give the same result). The same seed
  always gives the same output, which makes the input pipeline
  deterministic and resumable. Sub-operations get their own sub-seeds from
  ``tf.random.experimental.stateless_split``, always split into a fixed number
  of parts, so switching one op on or off never changes the others' draws.
* Everything is graph-safe (``tf.cond`` / ``tf.switch_case`` on tensors) so it
  can run inside ``tf.data.Dataset.map``. Python-level branching only happens
  on Python constants (probabilities and strengths from the config), which lets
  disabled ops vanish from the graph instead of costing a ``tf.cond``.

References: SimCLR (Chen et al. 2020, appendix A; figure 4 for the rotation,
cutout, noise and Sobel ablations), SimCLR v2, MoCo v2, BYOL (solarization),
MoCo v3, Cutout (DeVries & Taylor 2017).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Real
from typing import Union

import tensorflow as tf

SeedLike = Union[tf.Tensor, Sequence[int]]
Range = tuple[float, float]

__all__ = [
  "random_resized_crop",
  "random_flip",
  "color_jitter",
  "color_jitter_explicit",
  "random_grayscale",
  "random_blur",
  "random_solarize",
  "random_rotate90",
  "random_cutout",
  "random_gaussian_noise",
  "random_sobel",
  "simclr_view",
  "center_crop",
  "blur_kernel_size",
]

# Everything here is written graph-safe already (tf.cond / tf.switch_case, Python
# branching only on Python constants), so AutoGraph conversion inside
# `Dataset.map` would only add tracing time.
_graph_safe = tf.autograph.experimental.do_not_convert

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _as_seed(seed: SeedLike) -> tf.Tensor:
  """Returns `seed` as a shape-[2] int64 tensor.

  Always int64: `stateless_split` draws sub-seeds in the seed's dtype, so an
  int32 and an int64 seed with equal values would otherwise give different
  augmentations.
  """
  seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
  seed.shape.assert_is_compatible_with([2])
  return seed


def _split(seed: SeedLike, num: int) -> list[tf.Tensor]:
  """Splits `seed` into `num` independent sub-seeds."""
  return tf.unstack(tf.random.experimental.stateless_split(_as_seed(seed), num))


def _as_float_image(image: tf.Tensor) -> tf.Tensor:
  """Float32 in [0, 1]: a no-op for float32 input, rescales integer images."""
  return tf.image.convert_image_dtype(tf.convert_to_tensor(image), tf.float32)


def clip(image: tf.Tensor) -> tf.Tensor:
  """Back into [0, 1] after an op that can leave it (device_augment.clip's twin)."""
  return tf.clip_by_value(image, 0.0, 1.0)


def _is_const(x) -> bool:
  return isinstance(x, Real)


def _check_prob(p, name: str = "p") -> None:
  if _is_const(p) and not 0.0 <= p <= 1.0:
    raise ValueError(f"{name} must be in [0, 1], got {p}.")


def _uniform(seed: tf.Tensor, minval, maxval) -> tf.Tensor:
  """A scalar float32 drawn from U[minval, maxval)."""
  return tf.random.stateless_uniform([], seed, minval=minval, maxval=maxval, dtype=tf.float32)


def _random_apply(
  fn: Callable[[tf.Tensor], tf.Tensor], image: tf.Tensor, seed: tf.Tensor, p
) -> tf.Tensor:
  """Applies `fn` with probability `p`, coin drawn from `seed`.

  For a constant p of 0 or 1 no coin is drawn: p=0 removes the op from the
  graph entirely (disabled augmentations cost nothing), p=1 always applies it.
  """
  _check_prob(p)
  if _is_const(p):
    if p <= 0.0:
      return image
    if p >= 1.0:
      return fn(image)
  apply = tf.random.stateless_uniform([], seed, dtype=tf.float32) < p
  return tf.cond(apply, lambda: fn(image), lambda: image)


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """Bicubic resize to size x size (as SimCLR), clipped: bicubic overshoots."""
  out = tf.image.resize(image, [size, size], method=tf.image.ResizeMethod.BICUBIC)
  return clip(out)


# ---------------------------------------------------------------------------
# Random resized crop
# ---------------------------------------------------------------------------


def _sample_crop_box(
  image_shape: tf.Tensor,
  seed: SeedLike,
  *,
  area_range: Range = (0.08, 1.0),
  aspect_range: Range = (3 / 4, 4 / 3),
) -> tf.Tensor:
  """Samples an Inception-style crop box; returns int32 [offset_y, offset_x, h, w].

  `tf.image.stateless_sample_distorted_bounding_box` draws the aspect ratio
  (width / height, in pixels) *uniformly* from `aspect_range` -- as SimCLR's
  TF code does, not log-uniformly as torchvision -- then a height so that the
  area fraction lies in `area_range`. After 100 failed attempts it falls
  back to the whole image. `min_object_covered=0` so that `area_range` alone
  bounds the crop (SimCLR's default of 0.1 silently raises the 0.08 floor).
  """
  if not 0.0 < area_range[0] <= area_range[1] <= 1.0:
    raise ValueError(f"area_range must satisfy 0 < lo <= hi <= 1, got {area_range}.")
  if not 0.0 < aspect_range[0] <= aspect_range[1]:
    raise ValueError(f"aspect_range must satisfy 0 < lo <= hi, got {aspect_range}.")
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    image_size=image_shape,
    bounding_boxes=tf.zeros([1, 0, 4], tf.float32),  # none: use whole image
    seed=_as_seed(seed),
    min_object_covered=0.0,
    aspect_ratio_range=aspect_range,
    area_range=area_range,
    max_attempts=100,
    use_image_if_no_bounding_boxes=True,
  )
  return tf.cast(tf.stack([begin[0], begin[1], size[0], size[1]]), tf.int32)


@_graph_safe
def random_resized_crop(
  image: tf.Tensor,
  seed: SeedLike,
  *,
  size: int,
  area_range: Range = (0.08, 1.0),
  aspect_range: Range = (3 / 4, 4 / 3),
) -> tf.Tensor:
  """Random crop + resize, SimCLR's main augmentation ("crop and resize").

  A box covering `area_range` of the image (SimCLR: 8%-100%) with aspect
  ratio in `aspect_range` (3/4-4/3, sampled uniformly; see `_sample_crop_box`)
  is cut out and resized bicubically to `size` x `size`.
  """
  image = _as_float_image(image)
  box = _sample_crop_box(tf.shape(image), seed, area_range=area_range, aspect_range=aspect_range)
  crop = tf.slice(image, [box[0], box[1], 0], [box[2], box[3], -1])
  return _resize(crop, size)


# ---------------------------------------------------------------------------
# Flip
# ---------------------------------------------------------------------------


@_graph_safe
def random_flip(image: tf.Tensor, seed: SeedLike) -> tf.Tensor:
  """Horizontal flip with probability 0.5 (applied together with the crop in SimCLR)."""
  image = _as_float_image(image)
  return tf.image.stateless_random_flip_left_right(image, _as_seed(seed))


# ---------------------------------------------------------------------------
# Colour distortion
# ---------------------------------------------------------------------------


def _jitter_order(seed: SeedLike, num: int = 4) -> tf.Tensor:
  """A random permutation of `num` colour ops (SimCLR applies them in random order)."""
  return tf.argsort(tf.random.stateless_uniform([num], _as_seed(seed)))


@_graph_safe
def color_jitter_explicit(
  image: tf.Tensor,
  seed: SeedLike,
  *,
  brightness: float,
  contrast: float,
  saturation: float,
  hue: float,
  p: float = 0.8,
) -> tf.Tensor:
  """Colour jitter with separate strengths (MoCo v2: 0.4, 0.4, 0.4, 0.1), prob. `p`.

  Factors: brightness multiplies by U[max(0, 1-b), 1+b] (SimCLR v2 style);
  contrast and saturation use U[max(0, 1-c), 1+c] (clamped at 0 so strong
  settings never invert the image); hue shifts by U[-h, h] with h <= 0.5.
  The four ops run in a random order per image, clipping to [0, 1] after each.
  A strength of 0 drops that op (exact identity).
  """
  for name, value in (
    ("brightness", brightness),
    ("contrast", contrast),
    ("saturation", saturation),
    ("hue", hue),
  ):
    if _is_const(value) and value < 0:
      raise ValueError(f"{name} must be >= 0, got {value}.")
  image = _as_float_image(image)
  if all(_is_const(v) and v == 0 for v in (brightness, contrast, saturation, hue)):
    return image
  coin_seed, order_seed, b_seed, c_seed, s_seed, h_seed = _split(seed, 6)

  def active(strength) -> bool:
    return not (_is_const(strength) and strength == 0)

  # Factors are drawn up front, one sub-seed per op, so they do not depend on
  # the order in which the ops happen to run.
  ops = []
  if active(brightness):
    b = _uniform(b_seed, tf.maximum(1.0 - brightness, 0.0), 1.0 + brightness)
    ops.append(lambda x: clip(x * b))
  if active(contrast):
    c = _uniform(c_seed, tf.maximum(1.0 - contrast, 0.0), 1.0 + contrast)
    ops.append(lambda x: clip(tf.image.adjust_contrast(x, c)))
  if active(saturation):
    s = _uniform(s_seed, tf.maximum(1.0 - saturation, 0.0), 1.0 + saturation)
    ops.append(lambda x: clip(tf.image.adjust_saturation(x, s)))
  if active(hue):
    h_max = tf.minimum(tf.cast(hue, tf.float32), 0.5)
    h = _uniform(h_seed, -h_max, h_max)
    ops.append(lambda x: clip(tf.image.adjust_hue(x, h)))

  def jitter(x: tf.Tensor) -> tf.Tensor:
    if len(ops) == 1:
      return ops[0](x)
    # Random permutation of the active ops, then one switch per position.
    order = _jitter_order(order_seed, len(ops))
    for i in range(len(ops)):
      x = tf.switch_case(order[i], [lambda op=op: op(x) for op in ops])
    return x

  return _random_apply(jitter, image, coin_seed, p)


@_graph_safe
def color_jitter(image: tf.Tensor, seed: SeedLike, *, strength: float, p: float = 0.8) -> tf.Tensor:
  """SimCLR colour distortion of strength `s` (1.0 for ImageNet, 0.5 for CIFAR).

  Equivalent to `color_jitter_explicit` with brightness = contrast =
  saturation = 0.8 s and hue = 0.2 s, applied with probability `p`.
  """
  return color_jitter_explicit(
    image,
    seed,
    brightness=0.8 * strength,
    contrast=0.8 * strength,
    saturation=0.8 * strength,
    hue=0.2 * strength,
    p=p,
  )


@_graph_safe
def random_grayscale(image: tf.Tensor, seed: SeedLike, *, p: float = 0.2) -> tf.Tensor:
  """Converts to grayscale (kept as 3 channels) with probability `p` (SimCLR: 0.2)."""
  image = _as_float_image(image)

  def gray(x: tf.Tensor) -> tf.Tensor:
    return clip(tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 3]))

  return _random_apply(gray, image, _as_seed(seed), p)


# ---------------------------------------------------------------------------
# Gaussian blur
# ---------------------------------------------------------------------------


def blur_kernel_size(side: int) -> int:
  """Blur kernel size: 10% of the image side, made odd (SimCLR), at least 3.

  radius = side // 20, kernel = 2 * radius + 1; e.g. 224 -> 23, 32 -> 3.
  """
  return 2 * max(int(side) // 20, 1) + 1


def _blur_radius(image: tf.Tensor):
  """Kernel radius from the image height: a Python int if static, else a tensor."""
  height = image.shape[0]
  if height is not None:
    return (blur_kernel_size(height) - 1) // 2
  return tf.maximum(tf.shape(image)[0] // 20, 1)


def _sample_blur_sigma(seed: SeedLike, sigma_range: Range = (0.1, 2.0)) -> tf.Tensor:
  """Blur standard deviation ~ U[sigma_range] (SimCLR: [0.1, 2.0] pixels)."""
  return _uniform(_as_seed(seed), sigma_range[0], sigma_range[1])


def _gaussian_kernel(radius, sigma: tf.Tensor) -> tf.Tensor:
  """Normalised 1-D Gaussian weights on [-radius, radius]."""
  x = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  weights = tf.exp(-tf.square(x) / (2.0 * tf.square(tf.cast(sigma, tf.float32))))
  return weights / tf.reduce_sum(weights)


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, radius) -> tf.Tensor:
  """Separable Gaussian blur with reflect padding (keeps borders unbiased)."""
  channels = image.shape[-1] if image.shape[-1] is not None else 3
  kernel = _gaussian_kernel(radius, sigma)
  k_vert = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
  k_horiz = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
  padded = tf.pad(image, [[radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
  x = padded[tf.newaxis]
  x = tf.nn.depthwise_conv2d(x, k_vert, strides=[1, 1, 1, 1], padding="VALID")
  x = tf.nn.depthwise_conv2d(x, k_horiz, strides=[1, 1, 1, 1], padding="VALID")
  return tf.reshape(clip(x[0]), tf.shape(image))


@_graph_safe
def random_blur(
  image: tf.Tensor, seed: SeedLike, *, p: float = 0.5, sigma_range: Range = (0.1, 2.0)
) -> tf.Tensor:
  """Gaussian blur with probability `p` (SimCLR ImageNet: 0.5; off for CIFAR).

  Kernel size is 10% of the image height (`blur_kernel_size`), sigma is
  drawn from U[sigma_range]; separable depthwise convolution, reflect padding.
  """
  if not 0.0 < sigma_range[0] <= sigma_range[1]:
    raise ValueError(f"sigma_range must satisfy 0 < lo <= hi, got {sigma_range}.")
  image = _as_float_image(image)
  coin_seed, sigma_seed = _split(seed, 2)
  radius = _blur_radius(image)

  def blur(x: tf.Tensor) -> tf.Tensor:
    out = gaussian_blur(x, _sample_blur_sigma(sigma_seed, sigma_range), radius)
    return tf.ensure_shape(out, x.shape)

  return _random_apply(blur, image, coin_seed, p)


# ---------------------------------------------------------------------------
# Solarization
# ---------------------------------------------------------------------------


@_graph_safe
def random_solarize(
  image: tf.Tensor, seed: SeedLike, *, p: float, threshold: float = 0.5
) -> tf.Tensor:
  """Inverts pixels at or above `threshold` with probability `p` (BYOL: 0.0 / 0.2)."""
  image = _as_float_image(image)

  def solarize(x: tf.Tensor) -> tf.Tensor:
    return tf.where(x < threshold, x, 1.0 - x)

  return _random_apply(solarize, image, _as_seed(seed), p)


# ---------------------------------------------------------------------------
# SimCLR figure 4 ablations: rotation, cutout, Gaussian noise, Sobel filter
# ---------------------------------------------------------------------------
# Not in any method's recipe (every config has them at p=0); they exist to
# reproduce the study of single and paired transformations. Their parameters
# below are this library's choices, each with its reason.


@_graph_safe
def random_rotate90(image: tf.Tensor, seed: SeedLike, *, p: float) -> tf.Tensor:
  """Rotates by 90, 180 or 270 degrees (one of the three uniformly) with probability `p`.

  Never 0 degrees once applied, so `p` is exactly the rate of rotated views.
  Views are square (`simclr_view` resizes to size x size); on a non-square
  image a 90 or 270 degree turn swaps height and width.
  """
  image = _as_float_image(image)
  coin_seed, k_seed = _split(seed, 2)

  def rotate(x: tf.Tensor) -> tf.Tensor:
    k = tf.random.stateless_uniform([], k_seed, minval=1, maxval=4, dtype=tf.int32)
    out = tf.image.rot90(x, k)
    if x.shape[0] is not None and x.shape[0] == x.shape[1]:
      out = tf.ensure_shape(out, x.shape)
    return out

  return _random_apply(rotate, image, coin_seed, p)


def _sample_cutout_box(
  image_shape: tf.Tensor, seed: SeedLike, side_range: Range = (0.1, 0.5)
) -> tf.Tensor:
  """An int32 [top, left, side] square: side ~ U[side_range] x the shorter image side
  (rounded, at least 1 pixel), placed uniformly so that it lies wholly inside."""
  side_seed, top_seed, left_seed = _split(seed, 3)
  height, width = image_shape[0], image_shape[1]
  short = tf.cast(tf.minimum(height, width), tf.float32)
  side = tf.cast(tf.round(_uniform(side_seed, side_range[0], side_range[1]) * short), tf.int32)
  side = tf.clip_by_value(side, 1, tf.minimum(height, width))

  def offset(s: tf.Tensor, extent: tf.Tensor) -> tf.Tensor:
    return tf.random.stateless_uniform([], s, minval=0, maxval=extent - side + 1, dtype=tf.int32)

  return tf.stack([offset(top_seed, height), offset(left_seed, width), side])


@_graph_safe
def random_cutout(
  image: tf.Tensor, seed: SeedLike, *, p: float, side_range: Range = (0.1, 0.5)
) -> tf.Tensor:
  """Sets one random square patch to 0 (black) with probability `p`.

  The side is U[side_range] (default 10%-50%) of the shorter image side, so
  the patch covers 1%-25% of a square view: from a small occlusion to a
  quarter of the image. Its position is uniform among those that keep it
  wholly inside the image (Cutout lets the border clip it), so its size is
  exactly the one drawn. Filled with 0 rather than the image's mean, so the
  fill tells nothing about the image; Cutout also writes 0, but after mean
  subtraction, where 0 is the dataset mean.
  """
  if not 0.0 < side_range[0] <= side_range[1] <= 1.0:
    raise ValueError(f"side_range must satisfy 0 < lo <= hi <= 1, got {side_range}.")
  image = _as_float_image(image)
  coin_seed, box_seed = _split(seed, 2)

  def cutout(x: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(x)
    top, left, side = tf.unstack(_sample_cutout_box(shape, box_seed, side_range))
    rows = tf.range(shape[0])[:, tf.newaxis]
    cols = tf.range(shape[1])[tf.newaxis, :]
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return tf.where(inside[..., tf.newaxis], tf.zeros_like(x), x)

  return _random_apply(cutout, image, coin_seed, p)


@_graph_safe
def random_gaussian_noise(
  image: tf.Tensor, seed: SeedLike, *, p: float, sigma_range: Range = (0.0, 0.1)
) -> tf.Tensor:
  """Adds N(0, sigma^2) to every pixel and channel with probability `p`, then clips to [0, 1].

  sigma ~ U[sigma_range] per image, on the [0, 1] scale. The default upper
  end 0.1 (about 25 of 255 levels) is strong, clearly visible noise that
  still leaves the object recognisable; starting at 0 spans every strength
  down to none, as blur's sigma range does.
  """
  if not 0.0 <= sigma_range[0] <= sigma_range[1]:
    raise ValueError(f"sigma_range must satisfy 0 <= lo <= hi, got {sigma_range}.")
  image = _as_float_image(image)
  coin_seed, sigma_seed, noise_seed = _split(seed, 3)

  def noise(x: tf.Tensor) -> tf.Tensor:
    sigma = _uniform(sigma_seed, sigma_range[0], sigma_range[1])
    return clip(x + sigma * tf.random.stateless_normal(tf.shape(x), noise_seed))

  return _random_apply(noise, image, coin_seed, p)


def _sobel_magnitude(image: tf.Tensor) -> tf.Tensor:
  """[H, W, 1] Sobel gradient magnitude of the grayscale image (reflect padding)."""
  edges = tf.image.sobel_edges(tf.image.rgb_to_grayscale(image)[tf.newaxis])[0]  # [H, W, 1, 2]
  return tf.sqrt(tf.reduce_sum(tf.square(edges), axis=-1))


@_graph_safe
def random_sobel(image: tf.Tensor, seed: SeedLike, *, p: float) -> tf.Tensor:
  """Replaces the image by its Sobel edge map with probability `p` (3 equal channels).

  Gradient magnitude of the grayscale image, divided by its maximum over the
  image so the strongest edge is 1: dividing by the largest magnitude possible
  (2 sqrt(5) for grays in [0, 1]) would leave natural images nearly black. A
  flat image gives 0.
  """
  image = _as_float_image(image)

  def sobel(x: tf.Tensor) -> tf.Tensor:
    magnitude = _sobel_magnitude(x)
    magnitude = tf.math.divide_no_nan(magnitude, tf.reduce_max(magnitude))
    return tf.ensure_shape(clip(tf.tile(magnitude, [1, 1, 3])), x.shape)

  return _random_apply(sobel, image, _as_seed(seed), p)


# ---------------------------------------------------------------------------
# Full views and eval preprocessing
# ---------------------------------------------------------------------------


# Folded into a view's seed for the ablations' sub-seeds: a derivation of its own,
# so the seeds of crop ... solarize (a fixed 6-way split) do not depend on them.
_ABLATION_STREAM = 1


@_graph_safe
def simclr_view(
  image: tf.Tensor,
  seed: SeedLike,
  *,
  size: int,
  crop_area: Range = (0.08, 1.0),
  flip: bool = True,
  color_strength: float = 1.0,
  color_jitter_strengths: tuple[float, float, float, float] | None = None,
  color_p: float = 0.8,
  grayscale_p: float = 0.2,
  blur_p: float = 0.5,
  solarize_p: float = 0.0,
  rotate_p: float = 0.0,
  cutout_p: float = 0.0,
  noise_p: float = 0.0,
  sobel_p: float = 0.0,
) -> tf.Tensor:
  """One augmented view: crop -> flip -> colour jitter -> grayscale -> blur -> solarize,
  then SimCLR's figure 4 ablations: rotate -> Sobel -> noise -> cutout.

  Defaults are SimCLR's ImageNet recipe; CIFAR uses color_strength=0.5,
  blur_p=0. BYOL / MoCo v3 use asymmetric blur_p / solarize_p per view.
  `color_jitter_strengths=(b, c, s, h)` overrides `color_strength` (MoCo v2:
  (0.4, 0.4, 0.4, 0.1)). Each stage has its own sub-seed; ops with p=0 are
  left out of the graph.

  The ablations (off by default) come after the crop, as in the figure's
  crop-then-transform pairs: the geometric rotation first; Sobel next, since
  it replaces the image by its edge map; then the pixel corruptions, cutout
  last so that its patch is exactly 0 in the view. Their sub-seeds come from
  a stream of their own (`_ABLATION_STREAM`), drawn only when one is on, so
  the six stages above see the same seeds whether they are on or off.
  """
  if color_jitter_strengths is not None and len(color_jitter_strengths) != 4:
    raise ValueError(
      "color_jitter_strengths must be (brightness, contrast, "
      f"saturation, hue), got {color_jitter_strengths}."
    )
  crop_seed, flip_seed, color_seed, gray_seed, blur_seed, sol_seed = _split(seed, 6)
  x = random_resized_crop(image, crop_seed, size=size, area_range=crop_area)
  if flip:
    x = random_flip(x, flip_seed)
  if color_jitter_strengths is not None:
    b, c, s, h = color_jitter_strengths
    x = color_jitter_explicit(
      x, color_seed, brightness=b, contrast=c, saturation=s, hue=h, p=color_p
    )
  else:
    x = color_jitter(x, color_seed, strength=color_strength, p=color_p)
  x = random_grayscale(x, gray_seed, p=grayscale_p)
  x = random_blur(x, blur_seed, p=blur_p)
  x = random_solarize(x, sol_seed, p=solarize_p)
  if all(_is_const(q) and q == 0 for q in (rotate_p, cutout_p, noise_p, sobel_p)):
    return x
  ablation_seed = tf.random.experimental.stateless_fold_in(_as_seed(seed), _ABLATION_STREAM)
  rot_seed, sobel_seed, noise_seed, cut_seed = _split(ablation_seed, 4)
  x = random_rotate90(x, rot_seed, p=rotate_p)
  x = random_sobel(x, sobel_seed, p=sobel_p)
  x = random_gaussian_noise(x, noise_seed, p=noise_p)
  x = random_cutout(x, cut_seed, p=cutout_p)
  return x


@_graph_safe
def center_crop(image: tf.Tensor, *, size: int, crop_proportion: float = 0.875) -> tf.Tensor:
  """Eval preprocessing: central square of `crop_proportion` of the shorter side, resized.

  0.875 is the usual ImageNet ratio (224 / 256); for small images such as
  CIFAR at their native size the caller passes crop_proportion=1.0.
  """
  if not 0.0 < crop_proportion <= 1.0:
    raise ValueError(f"crop_proportion must be in (0, 1], got {crop_proportion}.")
  image = _as_float_image(image)
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  side = tf.cast(
    tf.round(crop_proportion * tf.cast(tf.minimum(height, width), tf.float32)), tf.int32
  )
  side = tf.maximum(side, 1)
  top = (height - side) // 2
  left = (width - side) // 2
  crop = tf.slice(image, [top, left, 0], [side, side, -1])
  return _resize(crop, size)
