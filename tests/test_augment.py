"""Tests for cvrl_jax.augment: contracts, determinism, distributions, graph mode."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from cvrl_jax.data import augment as A

SEED = tf.constant([3, 7], tf.int64)


def noise_image(h=32, w=32, seed=(0, 1)):
  return tf.random.stateless_uniform([h, w, 3], seed)


def coord_image(h, w):
  """Channel 0 encodes the row, channel 1 the column, channel 2 is 0.5."""
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  img = np.stack([rows / (h - 1), cols / (w - 1), np.full((h, w), 0.5)], -1)
  return tf.constant(img, tf.float32)


def sweep(fn, image, n, base=0):
  """fn(image, seed) for seeds [base, 0..n-1], run in graph mode via tf.data."""
  base = tf.constant(base, tf.int64)
  ds = tf.data.Dataset.range(n).map(lambda i: fn(image, tf.stack([base, i])))
  return next(iter(ds.batch(n))).numpy()


def changed(outputs, image, atol=1e-6):
  """Per-output boolean: did the op change the image?"""
  axes = tuple(range(1, outputs.ndim))
  return np.max(np.abs(outputs - np.asarray(image)[None]), axis=axes) > atol


# Every public random op with settings that make it always do something.
RANDOM_OPS = {
  "crop": lambda x, s: A.random_resized_crop(x, s, size=24),
  "flip": A.random_flip,
  "jitter": lambda x, s: A.color_jitter(x, s, strength=1.0, p=1.0),
  "jitter_explicit": lambda x, s: A.color_jitter_explicit(
    x, s, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=1.0
  ),
  "gray": lambda x, s: A.random_grayscale(x, s, p=0.5),
  "blur": lambda x, s: A.random_blur(x, s, p=1.0),
  "solarize": lambda x, s: A.random_solarize(x, s, p=0.5),
  "view": lambda x, s: A.simclr_view(x, s, size=24, solarize_p=0.2),
}


# --------------------------------------------------------------------------
# Contracts shared by all ops
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
@pytest.mark.parametrize("hw", [(32, 32), (40, 64)])
def test_shape_dtype_range(name, hw):
  image = noise_image(*hw)
  out = RANDOM_OPS[name](image, SEED)
  expected = (24, 24, 3) if name in ("crop", "view") else (*hw, 3)
  assert tuple(out.shape) == expected
  assert out.dtype == tf.float32
  out = out.numpy()
  assert out.min() >= 0.0 and out.max() <= 1.0
  assert np.all(np.isfinite(out))


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_determinism(name):
  fn, image = RANDOM_OPS[name], noise_image()
  a = fn(image, SEED).numpy()
  b = fn(image, tf.constant([3, 7], tf.int64)).numpy()
  np.testing.assert_array_equal(a, b)
  # int32 and python seeds work and give the same result as int64 ones.
  np.testing.assert_array_equal(a, fn(image, [3, 7]).numpy())
  outs = [fn(image, [3, k]).numpy() for k in range(8)]
  assert len({o.tobytes() for o in outs}) > 1, "different seeds should differ"


def test_uint8_input_is_converted():
  image = tf.cast(noise_image() * 255, tf.uint8)
  out = A.simclr_view(image, SEED, size=16)
  assert out.dtype == tf.float32 and float(tf.reduce_max(out)) <= 1.0
  np.testing.assert_allclose(
    A.random_flip(image, [0, 0]).numpy().max(), np.asarray(image).max() / 255.0, rtol=1e-6
  )


def test_invalid_arguments_raise():
  image = noise_image(8, 8)
  with pytest.raises(ValueError):
    A.random_grayscale(image, SEED, p=1.5)
  with pytest.raises(ValueError):
    A.color_jitter(image, SEED, strength=-1.0)
  with pytest.raises(ValueError):
    A.random_blur(image, SEED, p=1.0, sigma_range=(0.0, 1.0))
  with pytest.raises(ValueError):
    A.center_crop(image, size=8, crop_proportion=0.0)


# --------------------------------------------------------------------------
# Random resized crop
# --------------------------------------------------------------------------


@pytest.mark.parametrize("area_range", [(0.08, 1.0), (0.3, 0.6)])
def test_crop_box_area_and_aspect(area_range):
  h, w = 64, 80
  aspect_range = (3 / 4, 4 / 3)
  boxes = sweep(
    lambda img, s: A._sample_crop_box(
      tf.shape(img), s, area_range=area_range, aspect_range=aspect_range
    ),
    tf.zeros([h, w, 3]),
    300,
  )
  oy, ox, bh, bw = boxes.T
  assert np.all(oy >= 0) and np.all(ox >= 0)
  assert np.all(oy + bh <= h) and np.all(ox + bw <= w)
  frac = bh * bw / (h * w)
  assert np.all(frac >= area_range[0] - 1e-6) and np.all(frac <= area_range[1] + 1e-6)
  # The whole range is used, not a corner of it.
  span = area_range[1] - area_range[0]
  assert frac.min() < area_range[0] + 0.2 * span
  assert frac.max() > area_range[1] - 0.2 * span
  # Aspect ratio (up to integer rounding of the box sides).
  aspect = bw / bh
  assert np.all(aspect >= aspect_range[0] * (1 - 2 / bh))
  assert np.all(aspect <= aspect_range[1] * (1 + 2 / bh))
  assert aspect.min() < 0.9 and aspect.max() > 1.1
  # Offsets vary too.
  assert len(set(zip(oy, ox))) > 50


def test_crop_content_matches_box():
  image = coord_image(48, 64)
  for k in range(5):
    seed = [5, k]
    oy, ox, bh, bw = A._sample_crop_box(tf.shape(image), seed).numpy()
    out = A.random_resized_crop(image, seed, size=20).numpy()
    expected = tf.image.resize(image[oy : oy + bh, ox : ox + bw], [20, 20], method="bicubic")
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-6)
    # Corners of the output lie inside the box's coordinate range.
    assert out[..., 0].min() >= oy / 47 - 0.05 and out[..., 0].max() <= (oy + bh - 1) / 47 + 0.05
    assert out[..., 1].min() >= ox / 63 - 0.05 and out[..., 1].max() <= (ox + bw - 1) / 63 + 0.05


def test_crop_full_area_is_whole_image():
  image = noise_image(32, 32)
  for k in range(3):
    out = A.random_resized_crop(
      image, [1, k], size=32, area_range=(1.0, 1.0), aspect_range=(1.0, 1.0)
    )
    np.testing.assert_allclose(out.numpy(), image.numpy(), atol=1e-6)
  # Resized whole image; also for a non-square image (falls back to the full image).
  rect = coord_image(30, 50)
  out = A.random_resized_crop(rect, [1, 1], size=16, area_range=(1.0, 1.0), aspect_range=(1.0, 1.0))
  expected = np.clip(tf.image.resize(rect, [16, 16], method="bicubic"), 0, 1)
  np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


def test_crop_rejects_bad_ranges():
  with pytest.raises(ValueError):
    A.random_resized_crop(noise_image(), SEED, size=8, area_range=(0.5, 0.1))
  with pytest.raises(ValueError):
    A.random_resized_crop(noise_image(), SEED, size=8, aspect_range=(0.0, 1.0))


# --------------------------------------------------------------------------
# Flip
# --------------------------------------------------------------------------


def test_flip_rate_and_exact_mirror():
  image = noise_image(8, 8)
  outs = sweep(A.random_flip, image, 400)
  img, mirror = image.numpy(), image.numpy()[:, ::-1]
  is_same = np.all(outs == img[None], axis=(1, 2, 3))
  is_mirror = np.all(outs == mirror[None], axis=(1, 2, 3))
  assert np.all(is_same ^ is_mirror)
  assert 0.4 <= is_mirror.mean() <= 0.6


# --------------------------------------------------------------------------
# Grayscale
# --------------------------------------------------------------------------


def test_grayscale_p1_equal_channels_p0_identity():
  image = noise_image()
  gray = A.random_grayscale(image, SEED, p=1.0).numpy()
  np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
  expected = tf.image.rgb_to_grayscale(image).numpy()[..., 0]
  np.testing.assert_allclose(gray[..., 0], expected, atol=1e-6)
  np.testing.assert_array_equal(A.random_grayscale(image, SEED, p=0.0).numpy(), image.numpy())


def test_grayscale_rate():
  image = noise_image(4, 4)
  frac = changed(sweep(lambda x, s: A.random_grayscale(x, s, p=0.2), image, 400), image).mean()
  assert abs(frac - 0.2) <= 0.07


# --------------------------------------------------------------------------
# Colour jitter
# --------------------------------------------------------------------------


def test_color_jitter_identity_cases():
  image = noise_image()
  for out in (
    A.color_jitter(image, SEED, strength=0.0, p=1.0),
    A.color_jitter(image, SEED, strength=1.0, p=0.0),
    A.color_jitter_explicit(image, SEED, brightness=0, contrast=0, saturation=0, hue=0, p=1.0),
  ):
    np.testing.assert_allclose(out.numpy(), image.numpy(), atol=1e-6)
  # Tensor strength 0 goes through the real ops: still identity up to eps.
  zero = tf.constant(0.0)
  out = A.color_jitter_explicit(
    image, SEED, brightness=zero, contrast=zero, saturation=zero, hue=zero, p=1.0
  )
  np.testing.assert_allclose(out.numpy(), image.numpy(), atol=1e-5)


def test_color_jitter_changes_image():
  image = noise_image()
  outs = sweep(lambda x, s: A.color_jitter(x, s, strength=1.0, p=1.0), image, 8)
  assert np.all(changed(outs, image, atol=1e-3))
  assert len({o.tobytes() for o in outs}) == 8
  assert outs.min() >= 0.0 and outs.max() <= 1.0


def test_color_jitter_rate():
  image = noise_image(4, 4)
  outs = sweep(lambda x, s: A.color_jitter(x, s, strength=0.5, p=0.8), image, 200)
  assert abs(changed(outs, image).mean() - 0.8) <= 0.1


def test_color_jitter_is_explicit_with_simclr_strengths():
  image, s = noise_image(), 0.7
  a = A.color_jitter(image, SEED, strength=s, p=0.9)
  b = A.color_jitter_explicit(
    image, SEED, brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=0.2 * s, p=0.9
  )
  np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_brightness_is_multiplicative_in_range():
  image = tf.fill([4, 4, 3], 0.5)
  outs = sweep(
    lambda x, s: A.color_jitter_explicit(
      x, s, brightness=0.4, contrast=0, saturation=0, hue=0, p=1.0
    ),
    image,
    200,
  )
  factors = outs[:, 0, 0, 0] / 0.5
  np.testing.assert_allclose(
    outs, np.broadcast_to(factors[:, None, None, None] * 0.5, outs.shape), atol=1e-6
  )
  assert factors.min() >= 0.6 - 1e-6 and factors.max() <= 1.4 + 1e-6
  assert factors.min() < 0.7 and factors.max() > 1.3


def test_contrast_keeps_mean_and_saturation_keeps_gray():
  image = 0.25 + 0.5 * noise_image()  # far from the clip limits
  outs = sweep(
    lambda x, s: A.color_jitter_explicit(
      x, s, brightness=0, contrast=0.4, saturation=0, hue=0, p=1.0
    ),
    image,
    10,
  )
  np.testing.assert_allclose(
    outs.mean(axis=(1, 2)), np.broadcast_to(image.numpy().mean(axis=(0, 1)), (10, 3)), atol=1e-5
  )
  gray = tf.tile(image[..., :1], [1, 1, 3])
  outs = sweep(
    lambda x, s: A.color_jitter_explicit(
      x, s, brightness=0, contrast=0, saturation=0.8, hue=0, p=1.0
    ),
    gray,
    10,
  )
  np.testing.assert_allclose(outs, np.broadcast_to(gray.numpy(), outs.shape), atol=1e-5)


def test_jitter_order_is_random_permutation():
  orders = sweep(lambda x, s: A._jitter_order(s), tf.zeros([1]), 300)
  assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
  assert {tuple(o) for o in orders} == set(itertools.permutations(range(4)))


# --------------------------------------------------------------------------
# Blur
# --------------------------------------------------------------------------


def test_blur_kernel_size():
  assert A.blur_kernel_size(224) == 23
  assert A.blur_kernel_size(32) == 3
  assert A.blur_kernel_size(16) == 3  # radius 0 -> at least 3
  assert A.blur_kernel_size(96) == 9
  assert all(A.blur_kernel_size(s) % 2 == 1 for s in range(1, 300))


def test_blur_constant_image_stays_constant():
  for side in (32, 64):
    image = tf.fill([side, side, 3], 0.37)
    out = A.random_blur(image, SEED, p=1.0).numpy()
    np.testing.assert_allclose(out, 0.37, atol=1e-6)


def test_blur_reduces_noise_variance_and_keeps_mean():
  # sigma >= 1 (sigma near 0.1 is a near no-op, which is intended).
  image = noise_image(64, 64)
  for k in range(3):
    out = A.random_blur(image, [2, k], p=1.0, sigma_range=(1.0, 2.0)).numpy()
    assert out.var() < 0.5 * image.numpy().var()
    np.testing.assert_allclose(out.mean(), image.numpy().mean(), atol=0.01)


def test_blur_tiny_sigma_is_identity():
  image = noise_image(40, 40)
  out = A.random_blur(image, SEED, p=1.0, sigma_range=(0.05, 0.05)).numpy()
  np.testing.assert_allclose(out, image.numpy(), atol=1e-6)
  kernel = A._gaussian_kernel(3, tf.constant(1.5)).numpy()
  assert kernel.shape == (7,) and abs(kernel.sum() - 1) < 1e-6
  np.testing.assert_allclose(kernel, kernel[::-1])


def test_blur_sigma_range():
  sigmas = sweep(lambda x, s: A._sample_blur_sigma(s, (0.3, 1.7)), tf.zeros([1]), 300)
  assert sigmas.min() >= 0.3 and sigmas.max() <= 1.7
  assert sigmas.min() < 0.4 and sigmas.max() > 1.6


def test_blur_strength_grows_with_sigma():
  image = noise_image(32, 32)
  weak = A.random_blur(image, SEED, p=1.0, sigma_range=(0.5, 0.5)).numpy()
  strong = A.random_blur(image, SEED, p=1.0, sigma_range=(2.0, 2.0)).numpy()
  assert strong.var() < weak.var() < image.numpy().var()


def test_blur_rate():
  image = noise_image(8, 8)
  # sigma_range starts at 0.5 so that every applied blur visibly changes the image.
  frac = changed(
    sweep(lambda x, s: A.random_blur(x, s, p=0.5, sigma_range=(0.5, 2.0)), image, 400), image
  ).mean()
  assert abs(frac - 0.5) <= 0.1


def test_blur_dynamic_shape_in_graph():
  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
  def blur(x):
    return A.random_blur(x, SEED, p=1.0)

  image = noise_image(48, 40)
  np.testing.assert_allclose(
    blur(image).numpy(), A.random_blur(image, SEED, p=1.0).numpy(), atol=1e-6
  )


# --------------------------------------------------------------------------
# Solarize
# --------------------------------------------------------------------------


def test_solarize():
  image = tf.constant([[[0.8, 0.3, 0.5]]])
  out = A.random_solarize(image, SEED, p=1.0).numpy()
  np.testing.assert_allclose(out, [[[0.2, 0.3, 0.5]]], atol=1e-6)
  np.testing.assert_array_equal(A.random_solarize(image, SEED, p=0.0).numpy(), image.numpy())
  out = A.random_solarize(image, SEED, p=1.0, threshold=0.9).numpy()
  np.testing.assert_array_equal(out, image.numpy())
  # Pixels at the threshold are inverted (x < t is kept).
  out = A.random_solarize(image, SEED, p=1.0, threshold=0.3).numpy()
  np.testing.assert_allclose(out, [[[0.2, 0.7, 0.5]]], atol=1e-6)
  frac = changed(sweep(lambda x, s: A.random_solarize(x, s, p=0.3), image, 400), image).mean()
  assert abs(frac - 0.3) <= 0.07


# --------------------------------------------------------------------------
# simclr_view
# --------------------------------------------------------------------------


def test_view_identity_when_everything_off():
  image = noise_image(32, 32)
  out = A.simclr_view(
    image,
    SEED,
    size=32,
    crop_area=(1.0, 1.0),
    flip=False,
    color_strength=0.0,
    grayscale_p=0.0,
    blur_p=0.0,
  )
  # A square image with area 1 admits only the full crop (aspect 1).
  np.testing.assert_allclose(out.numpy(), image.numpy(), atol=1e-6)


def test_view_color_jitter_strengths_override():
  image = noise_image(32, 32)
  kw = dict(size=32, crop_area=(1.0, 1.0), flip=False, grayscale_p=0.0, blur_p=0.0, color_p=1.0)
  base = A.simclr_view(image, SEED, color_strength=1.0, **kw).numpy()
  zero = A.simclr_view(
    image, SEED, color_strength=1.0, color_jitter_strengths=(0, 0, 0, 0), **kw
  ).numpy()
  moco = A.simclr_view(image, SEED, color_jitter_strengths=(0.4, 0.4, 0.4, 0.1), **kw).numpy()
  np.testing.assert_allclose(zero, image.numpy(), atol=1e-6)
  assert not np.allclose(base, image.numpy(), atol=1e-3)
  assert not np.allclose(moco, base, atol=1e-3)
  with pytest.raises(ValueError):
    A.simclr_view(image, SEED, size=8, color_jitter_strengths=(0.4, 0.4))


def test_view_stages_use_independent_subseeds():
  # Turning solarization on only appends solarization: earlier draws are unchanged.
  image = noise_image(32, 32)
  plain = A.simclr_view(image, SEED, size=24, blur_p=0.0, solarize_p=0.0)
  solar = A.simclr_view(image, SEED, size=24, blur_p=0.0, solarize_p=1.0)
  np.testing.assert_allclose(
    solar.numpy(), A.random_solarize(plain, [0, 0], p=1.0).numpy(), atol=1e-6
  )


def _graph_text(**kwargs):
  fn = tf.function(lambda x, s: A.simclr_view(x, s, size=16, **kwargs))
  concrete = fn.get_concrete_function(
    tf.TensorSpec([32, 32, 3], tf.float32), tf.TensorSpec([2], tf.int64)
  )
  return str(concrete.graph.as_graph_def())


def test_view_zero_probability_ops_are_skipped():
  def n_conds(text):
    return text.count('op: "StatelessIf"') + text.count('op: "If"')

  off = _graph_text(blur_p=0.0, solarize_p=0.0)
  blur_on = _graph_text(blur_p=0.5, solarize_p=0.0)
  solarize_on = _graph_text(blur_p=0.0, solarize_p=0.2)
  assert "DepthwiseConv2dNative" not in off
  assert "DepthwiseConv2dNative" in blur_on
  # p=0 adds no random coin / cond: exactly one fewer conditional than p>0.
  assert n_conds(blur_on) == n_conds(off) + 1
  assert n_conds(solarize_on) == n_conds(off) + 1


# --------------------------------------------------------------------------
# center_crop
# --------------------------------------------------------------------------


def test_center_crop():
  image = noise_image(32, 32)
  out = A.center_crop(image, size=32, crop_proportion=1.0)
  np.testing.assert_allclose(out.numpy(), image.numpy(), atol=1e-6)
  rect = coord_image(64, 48)
  out = A.center_crop(rect, size=20)  # side = round(0.875 * 48) = 42
  top, left = (64 - 42) // 2, (48 - 42) // 2
  expected = np.clip(
    tf.image.resize(rect[top : top + 42, left : left + 42], [20, 20], method="bicubic"), 0, 1
  )
  assert out.shape == (20, 20, 3) and out.dtype == tf.float32
  np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
  # Centred: mean coordinate of the crop is the image centre.
  np.testing.assert_allclose(out.numpy()[..., :2].mean(axis=(0, 1)), [0.5, 0.5], atol=0.02)
  np.testing.assert_array_equal(out.numpy(), A.center_crop(rect, size=20).numpy())


# --------------------------------------------------------------------------
# tf.data integration
# --------------------------------------------------------------------------


def test_dataset_map_parallel_deterministic():
  images = np.random.RandomState(0).randint(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
  base_seed = tf.constant([42, 0], tf.int64)

  def two_views(index, image):
    image = tf.image.convert_image_dtype(image, tf.float32)
    seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    kw = dict(size=24, color_strength=0.5, blur_p=0.5, solarize_p=0.2)
    return A.simclr_view(image, s1, **kw), A.simclr_view(image, s2, **kw)

  def run():
    ds = tf.data.Dataset.from_tensor_slices(images).enumerate()
    ds = ds.map(two_views, num_parallel_calls=tf.data.AUTOTUNE).batch(8)
    return [(a.numpy(), b.numpy()) for a, b in ds]

  first, second = run(), run()
  assert len(first) == 2
  for (a1, b1), (a2, b2) in zip(first, second):
    assert a1.shape == (8, 24, 24, 3) and a1.dtype == np.float32
    assert a1.min() >= 0 and a1.max() <= 1
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    assert not np.allclose(a1, b1)  # the two views differ
  # Graph mode (tf.data) agrees with eager execution.
  eager_a, _ = two_views(tf.constant(3, tf.int64), images[3])
  np.testing.assert_allclose(first[0][0][3], eager_a.numpy(), atol=1e-5)


# --------------------------------------------------------------------------
# SimCLR figure 4 ablations: rotate, cutout, Gaussian noise, Sobel
# --------------------------------------------------------------------------

ABLATION_OPS = {
  "rotate": A.random_rotate90,
  "cutout": A.random_cutout,
  "noise": A.random_gaussian_noise,
  "sobel": A.random_sobel,
}
ABLATION_KEYS = ("rotate_p", "cutout_p", "noise_p", "sobel_p")


def _old_simclr_view(image, seed, *, size, flip=True, color_strength=1.0, color_p=0.8,
                     grayscale_p=0.2, blur_p=0.5, solarize_p=0.0):
  """simclr_view as it was before the ablations: the default path must still be this."""
  crop_seed, flip_seed, color_seed, gray_seed, blur_seed, sol_seed = A._split(seed, 6)
  x = A.random_resized_crop(image, crop_seed, size=size)
  if flip:
    x = A.random_flip(x, flip_seed)
  x = A.color_jitter(x, color_seed, strength=color_strength, p=color_p)
  x = A.random_grayscale(x, gray_seed, p=grayscale_p)
  x = A.random_blur(x, blur_seed, p=blur_p)
  return A.random_solarize(x, sol_seed, p=solarize_p)


@pytest.mark.parametrize("name", sorted(ABLATION_OPS))
def test_ablation_op_contract_p0_identity_and_determinism(name):
  fn, image = ABLATION_OPS[name], noise_image(24, 24)
  np.testing.assert_array_equal(fn(image, SEED, p=0.0).numpy(), image.numpy())
  out = fn(image, SEED, p=1.0)
  assert tuple(out.shape) == (24, 24, 3) and out.dtype == tf.float32
  out = out.numpy()
  assert out.min() >= 0.0 and out.max() <= 1.0
  assert not np.array_equal(out, image.numpy())
  np.testing.assert_array_equal(out, fn(image, [3, 7], p=1.0).numpy())  # int32 seed alike
  # Graph mode (tf.data) gives the eager result.
  graph = sweep(lambda x, s: fn(x, s, p=1.0), image, 2, base=3)
  np.testing.assert_array_equal(graph[1], fn(image, [3, 1], p=1.0).numpy())
  with pytest.raises(ValueError):
    fn(image, SEED, p=1.5)


def test_ablation_rotate_is_one_of_three_rotations_at_rate_p():
  image = coord_image(8, 8)  # every pixel distinct: each rotation is a different image
  rotations = [np.rot90(image.numpy(), k, axes=(0, 1)) for k in (1, 2, 3)]
  outs = sweep(lambda x, s: A.random_rotate90(x, s, p=1.0), image, 150)
  which = np.array([[np.array_equal(o, r) for r in rotations] for o in outs])
  assert np.all(which.sum(axis=1) == 1), "each output is exactly one rotation"
  counts = which.sum(axis=0)
  assert np.all(counts >= 30), counts  # about 50 each: uniform over 90 / 180 / 270
  frac = changed(sweep(lambda x, s: A.random_rotate90(x, s, p=0.5), image, 400), image).mean()
  assert abs(frac - 0.5) <= 0.08


@pytest.mark.parametrize("hw", [(40, 40), (30, 50)])
def test_ablation_cutout_zeroes_exactly_one_square(hw):
  h, w = hw
  image = 0.2 + 0.8 * noise_image(h, w)  # no zeros of its own
  outs = sweep(lambda x, s: A.random_cutout(x, s, p=1.0), image, 100)
  short, sides = min(h, w), []
  for out in outs:
    zero = np.all(out == 0.0, axis=-1)
    rows, cols = np.nonzero(zero)
    top, left = rows.min(), cols.min()
    side = rows.max() - top + 1
    assert cols.max() - left + 1 == side, "a square"
    assert zero.sum() == side * side, "filled: one square and nothing else"
    np.testing.assert_array_equal(out[~zero], image.numpy()[~zero])  # the rest unchanged
    assert round(0.1 * short) <= side <= round(0.5 * short)
    sides.append(side)
  # The range is used, and positions vary.
  assert min(sides) <= round(0.2 * short) and max(sides) >= round(0.4 * short)
  custom = A.random_cutout(image, SEED, p=1.0, side_range=(0.25, 0.25)).numpy()
  assert np.all(custom == 0.0, axis=-1).sum() == round(0.25 * short) ** 2
  with pytest.raises(ValueError):
    A.random_cutout(image, SEED, p=1.0, side_range=(0.0, 0.5))


def test_ablation_noise_std_in_range_zero_mean_and_clipped():
  gray = tf.fill([32, 32, 3], 0.5)  # 5 sigma from the clip limits: noise unclipped
  outs = sweep(lambda x, s: A.random_gaussian_noise(x, s, p=1.0), gray, 60)
  diff = (outs - 0.5).reshape(len(outs), -1)
  stds = diff.std(axis=1)
  assert np.all(stds > 0) and np.all(stds <= 0.1 * 1.08), stds.max()
  assert stds.min() < 0.03 and stds.max() > 0.08  # sigma ~ U[0, 0.1]
  assert np.all(np.abs(diff.mean(axis=1)) < 0.01)
  assert np.all((np.abs(diff) > 0).mean(axis=1) > 0.9)  # per pixel, not per image
  # A fixed sigma is the per-pixel standard deviation; channels get their own noise.
  fixed = A.random_gaussian_noise(gray, SEED, p=1.0, sigma_range=(0.05, 0.05)).numpy() - 0.5
  assert abs(fixed.std() - 0.05) < 0.05 * 0.06
  assert not np.array_equal(fixed[..., 0], fixed[..., 1])
  # Clipped to [0, 1]: on black and white pixels half of the noise is cut off.
  bw = tf.constant(np.indices((32, 32, 3)).sum(0) % 2, tf.float32)
  out = A.random_gaussian_noise(bw, SEED, p=1.0, sigma_range=(0.3, 0.3)).numpy()
  assert out.min() == 0.0 and out.max() == 1.0
  assert 0.4 < np.mean((out > 0) & (out < 1)) < 0.6
  with pytest.raises(ValueError):
    A.random_gaussian_noise(gray, SEED, p=1.0, sigma_range=(-0.1, 0.1))


def test_ablation_sobel_on_step_edges():
  # Vertical step: columns 0-3 black, 4-7 gray 0.6. The 3x3 Sobel kernel sees the
  # step only from columns 3 and 4 (reflect padding keeps the borders flat), where
  # the x-gradient is (1 + 2 + 1) * gray = 4 * gray; normalised that is 1.
  step = np.zeros([6, 8, 3], np.float32)
  step[:, 4:] = 0.6
  image = tf.constant(step)
  gray = float(tf.image.rgb_to_grayscale(image)[0, 4, 0])
  magnitude = A._sobel_magnitude(image).numpy()[..., 0]
  expected = np.zeros([6, 8])
  expected[:, 3:5] = 4 * gray
  np.testing.assert_allclose(magnitude, expected, rtol=1e-6, atol=0)
  out = A.random_sobel(image, SEED, p=1.0).numpy()
  assert out.shape == (6, 8, 3)
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  np.testing.assert_array_equal(out[..., 0], (expected > 0).astype(np.float32))
  # Horizontal step of a colour (the y-gradient of its gray value): rows 2 and 3.
  red = np.zeros([6, 8, 3], np.float32)
  red[3:, :, 0] = 1.0
  out = A.random_sobel(tf.constant(red), SEED, p=1.0).numpy()
  expected = np.zeros([6, 8, 3], np.float32)
  expected[2:4] = 1.0
  np.testing.assert_array_equal(out, expected)
  # A flat image has no edges: 0, not 0 / 0.
  np.testing.assert_array_equal(A.random_sobel(tf.fill([6, 8, 3], 0.3), SEED, p=1.0), 0.0)


@pytest.mark.parametrize("kw", [{}, {"blur_p": 0.0, "solarize_p": 0.3, "color_strength": 0.5}])
def test_ablation_off_view_is_bit_identical_to_the_old_path(kw):
  image = noise_image(32, 32)
  zeros = {key: 0.0 for key in ABLATION_KEYS}
  for k in range(4):
    seed = [11, k]
    old = _old_simclr_view(image, seed, size=24, **kw).numpy()
    np.testing.assert_array_equal(A.simclr_view(image, seed, size=24, **kw).numpy(), old)
    np.testing.assert_array_equal(
      A.simclr_view(image, seed, size=24, **kw, **zeros).numpy(), old
    )


def test_ablation_on_only_appends_it_to_the_same_view():
  # The ablations' seeds leave the crop ... solarize draws unchanged.
  image = noise_image(32, 32)
  kw = {"size": 24, "blur_p": 0.0}
  for k in range(4):
    seed = [5, k]
    plain = A.simclr_view(image, seed, **kw).numpy()
    rotated = A.simclr_view(image, seed, rotate_p=1.0, **kw).numpy()
    assert any(np.array_equal(rotated, np.rot90(plain, r, axes=(0, 1))) for r in (1, 2, 3))
    cut = A.simclr_view(image, seed, cutout_p=1.0, **kw).numpy()
    kept = ~np.all(cut == 0.0, axis=-1)
    assert 0 < (~kept).sum() < kept.size
    np.testing.assert_array_equal(cut[kept], plain[kept])
    edges = A.simclr_view(image, seed, sobel_p=1.0, **kw).numpy()
    np.testing.assert_array_equal(edges, A.random_sobel(plain, SEED, p=1.0).numpy())


def test_ablation_config_keys_default_off_and_reach_the_pipeline():
  from configs import simclr_v2
  from cvrl_jax.data import pipeline

  for variant in simclr_v2.VARIANTS:
    c = simclr_v2.get_config(variant)
    assert all(c.augment[key] == 0.0 for key in ABLATION_KEYS), variant
  c = simclr_v2.get_config("cpu")
  image = tf.cast(noise_image(32, 32) * 255, tf.uint8)
  plain = pipeline.view_fn(c, 0)(image, SEED).numpy()
  c.augment.sobel_p = 1.0
  edges = pipeline.view_fn(c, 0)(image, SEED).numpy()
  np.testing.assert_array_equal(edges, A.random_sobel(plain, SEED, p=1.0).numpy())


def test_ablation_refused_with_on_device():
  from configs import simclr_v2
  from cvrl_jax.data import device_augment

  c = simclr_v2.get_config("imagenet")
  assert c.augment.on_device and device_augment.enabled(c)
  for key in ABLATION_KEYS:
    c = simclr_v2.get_config("imagenet")
    c.augment[key] = 0.5
    fix = r"--config\.augment\.on_device=False"
    with pytest.raises(ValueError, match=rf"augment\.{key}=0\.5.*{fix}"):
      device_augment.enabled(c)
    c.augment.on_device = False
    assert not device_augment.enabled(c)
