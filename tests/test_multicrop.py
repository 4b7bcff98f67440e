"""Multi-crop input on the real CIFAR-10: shapes, determinism, resume, views unchanged."""

import itertools

import numpy as np

from configs import simclr_v2
from conftest import SHARED_TFDS
from cvrl_jax import config as config_lib
from cvrl_jax.data import pipeline


def config(num_small=3, **overrides):
  c = simclr_v2.get_config("cpu")
  c.data_dir = SHARED_TFDS
  c.num_train_examples = 96
  if num_small:
    config_lib.use_multicrop(c, num_small=num_small, size=16, crop_area=(0.05, 0.14))
  for k, v in overrides.items():
    c[k] = v
  return c


def take(c, batch, n, start_step=0):
  ds = pipeline.train_dataset(c, batch, start_step)
  return list(itertools.islice(pipeline.as_numpy(ds), n))


def test_small_crops_have_their_size_and_differ():
  (batch,) = take(config(), 8, 1)
  assert [v.shape for v in batch["views"]] == [(8, 32, 32, 3)] * 2
  small = batch["small_views"]
  assert len(small) == 3 and all(s.shape == (8, 16, 16, 3) and s.dtype == np.float32
                                 for s in small)
  assert all(0.0 <= s.min() and s.max() <= 1.0 for s in small)
  assert not np.allclose(small[0], small[1]) and not np.allclose(small[1], small[2])


def test_multicrop_leaves_the_views_bit_identical():
  """Turning multi-crop on adds crops; the views (and so every 2-view method's
  stream) stay exactly what they were."""
  plain = take(config(num_small=0), 16, 3, start_step=5)
  multi = take(config(), 16, 3, start_step=5)
  assert all("small_views" not in b for b in plain)
  for p, m in zip(plain, multi):
    for a, b in zip(p["views"], m["views"], strict=True):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(p["label"], m["label"])


def test_small_crops_are_deterministic_and_seeded():
  a, b, other = take(config(), 8, 2), take(config(), 8, 2), take(config(seed=1), 8, 2)
  for x, y in zip(a, b):
    for s, t in zip(x["small_views"], y["small_views"], strict=True):
      np.testing.assert_array_equal(s, t)
  assert not np.allclose(a[0]["small_views"][0], other[0]["small_views"][0])


def test_start_step_resumes_the_small_crops_exactly_across_epochs():
  # 96 examples / batch 16 = 6 steps per epoch; steps 4..8 cross into epoch 2.
  full = take(config(), 16, 9)
  resumed = take(config(), 16, 5, start_step=4)
  for x, y in zip(full[4:], resumed, strict=True):
    for s, t in zip(x["small_views"], y["small_views"], strict=True):
      np.testing.assert_array_equal(s, t)
