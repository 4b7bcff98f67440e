"""The tf.data pipeline on the real CIFAR-10: views, determinism, resume position."""

import itertools

import numpy as np
import pytest

from configs import simclr_v2
from conftest import SHARED_TFDS
from cvrl_jax.data import pipeline, sources


def config(**overrides):
  c = simclr_v2.get_config("cpu")
  c.data_dir = SHARED_TFDS
  c.num_train_examples = 96
  for k, v in overrides.items():
    c[k] = v
  return c


def take(ds, n):
  return list(itertools.islice(pipeline.as_numpy(ds), n))


def test_train_batches_have_two_different_views_in_range():
  (batch,) = take(pipeline.train_dataset(config(), 8), 1)
  v1, v2 = batch["views"]
  assert v1.shape == v2.shape == (8, 32, 32, 3) and v1.dtype == np.float32
  assert 0.0 <= v1.min() and v1.max() <= 1.0
  assert not np.allclose(v1, v2)
  assert batch["label"].dtype == np.int32 and set(batch["label"]) <= set(range(10))


def test_same_seed_same_stream_other_seed_other_stream():
  a = take(pipeline.train_dataset(config(), 8), 3)
  b = take(pipeline.train_dataset(config(), 8), 3)
  c = take(pipeline.train_dataset(config(seed=1), 8), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["views"][0], y["views"][0])
  assert not np.allclose(a[0]["views"][0], c[0]["views"][0])


def test_start_step_resumes_the_stream_exactly_across_epochs():
  # 96 examples / batch 16 = 6 steps per epoch; steps 4..9 cross into epoch 2.
  full = take(pipeline.train_dataset(config(), 16), 10)
  resumed = take(pipeline.train_dataset(config(), 16, start_step=4), 6)
  for x, y in zip(full[4:], resumed):
    np.testing.assert_array_equal(x["views"][1], y["views"][1])
    np.testing.assert_array_equal(x["label"], y["label"])


def test_each_epoch_sees_every_example_once_in_a_new_order():
  c = config(num_train_examples=64)
  batches = take(pipeline.train_dataset(c, 16), 8)
  labels = [np.concatenate([b["label"] for b in batches[e * 4:(e + 1) * 4]]) for e in (0, 1)]
  assert sorted(labels[0]) == sorted(labels[1])  # the same 64 images
  assert not np.array_equal(labels[0], labels[1])  # reshuffled


def test_eval_batches_are_padded_and_masked():
  ds, num_batches = pipeline.eval_dataset(config(), "test", 32, num=70)
  batches = take(ds, 100)
  assert num_batches == 3 == len(batches)
  mask = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  assert mask.sum() == 70 and (labels[70:] == -1).all() and (labels[:70] >= 0).all()
  assert batches[0]["image"].shape == (32, 32, 32, 3)


def test_unknown_dataset_name_is_a_clear_error():
  with pytest.raises(sources.DatasetNotFoundError, match="not a TFDS dataset name"):
    sources.get_builder(config(dataset="cifar_ten"))


def test_image_folder_dataset(tmp_path):
  import tensorflow as tf
  for split in ("train", "test"):
    for label in ("cat", "dog"):
      (tmp_path / split / label).mkdir(parents=True)
      for i in range(4):
        img = np.random.default_rng(i).integers(0, 255, (40, 40, 3), np.uint8)
        tf.io.write_file(str(tmp_path / split / label / f"{i}.png"), tf.io.encode_png(img))
  c = config(dataset="image_folder", data_dir=str(tmp_path), num_train_examples=0)
  assert sources.num_classes(c) == 2
  (batch,) = take(pipeline.train_dataset(c, 4), 1)
  assert batch["views"][0].shape == (4, 32, 32, 3)


def test_per_view_settings_take_one_value_or_one_per_view():
  one = config()
  one.augment.solarize_p = (1.0,)  # what --config.augment.solarize_p=1.0 gives
  (batch,) = take(pipeline.train_dataset(one, 8), 1)
  plain = take(pipeline.train_dataset(config(), 8), 1)[0]
  # Solarised on both views: pixels above 0.5 are inverted, so the views differ
  # from the unsolarised stream's, view 2 included.
  assert not np.allclose(batch["views"][1], plain["views"][1])
  three = config()
  three.augment.blur_p = (0.5, 0.5, 0.5)
  three.num_views = 4
  with pytest.raises(ValueError, match=r"config.augment.\w+=\(.*\) has [23] entries for 4 views"):
    pipeline.train_dataset(three, 8)
