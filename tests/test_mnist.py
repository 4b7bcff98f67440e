"""Single-channel data: the real MNIST (../shared/tfds) read as 3 equal channels
through the input pipeline, the mnist presets' pre-training, the evaluations, the
export and the pictures; image folders that mix grayscale, RGB and RGBA files."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, fake_workdir, read_metrics, tiny_config, tiny_moco_config

from configs import finetune as finetune_config
from configs import knn_eval as knn_config
from configs import linear_eval as linear_config
from configs import moco_v2, simclr_v2
from conftest import SHARED_TFDS
from cvrl_jax import models, train
from cvrl_jax.data import augment, device_augment, pipeline, sources
from cvrl_jax.evaluation import finetune, knn_eval, linear
from cvrl_jax.tools import export, visualize


def mnist_config(module=simclr_v2, **overrides):
  c = module.get_config("mnist")
  c.update({"data_dir": SHARED_TFDS, "num_train_examples": 64, **overrides})
  return c


def first(ds):
  return next(pipeline.as_numpy(ds))


def assert_gray(images, atol=0.0):
  """Every pixel has R = G = B (to ``atol``)."""
  np.testing.assert_allclose(images[..., 1], images[..., 0], atol=atol)
  np.testing.assert_allclose(images[..., 2], images[..., 0], atol=atol)


def test_mnist_presets_skip_the_colour_ops_gray_images_lack():
  for module in (simclr_v2, moco_v2):
    c = module.get_config("mnist")
    assert (c.dataset, c.image_size, c.model.width_multiplier) == ("mnist", 28, 0.25)
    assert c.augment.color_jitter_strengths[2:] == (0.0, 0.0)  # saturation, hue
    assert c.augment.grayscale_p == 0.0 and min(c.augment.color_jitter_strengths[:2]) > 0
    assert not c.augment.flip  # a mirrored digit is no digit


def test_flip_off_leaves_the_digit_unmirrored():
  c = mnist_config()
  c.augment.update(crop_area=(1.0, 1.0), color_p=0.0)  # the whole image, no colour
  image = first(sources.read(c, "train", 1))["image"]
  whole = image.astype(np.float32) / 255

  def views(flip):
    c.augment.flip = flip
    view = pipeline.view_fn(c, 0)
    return [view(tf.constant(image), tf.constant([i, 0])).numpy() for i in range(6)]

  for v in views(False):
    np.testing.assert_allclose(v, whole, atol=1e-5)
  assert any(np.allclose(v, whole[:, ::-1], atol=1e-5) for v in views(True))


def test_mnist_reads_as_three_equal_channels_in_every_stream():
  c = mnist_config()
  raw = first(sources.get_builder(c).as_dataset(split="train[:1]"))["image"]
  assert raw.shape == (28, 28, 1)  # what the files hold
  read = first(sources.read(c, "train", 1))["image"]
  assert read.shape == (28, 28, 3) and read.dtype == np.uint8
  for ch in range(3):
    np.testing.assert_array_equal(read[..., ch], raw[..., 0])  # lossless, repeated
  views = first(pipeline.train_dataset(c, 16))["views"]
  assert views[0].shape == (16, 28, 28, 3) and views[0].max() > 0.5
  assert not np.allclose(views[0], views[1])
  for v in views:
    assert_gray(v)
  image = first(pipeline.eval_dataset(c, "test", 16, num=16)[0])["image"]
  assert image.shape == (16, 28, 28, 3)
  assert_gray(image)


def test_the_colour_recipe_leaves_gray_images_gray_on_host_and_device():
  """Saturation, hue and grayscale are defined on 3-channel gray images: they change
  nothing, so a recipe that keeps them (any RGB preset run on MNIST) stays valid."""
  c = mnist_config()
  images = first(sources.read(c, "train", 4).batch(4))["image"]
  full = dict(color_strength=1.0, color_p=1.0, grayscale_p=1.0, blur_p=0.5, solarize_p=0.5)
  for i, image in enumerate(images):
    view = augment.simclr_view(tf.constant(image), tf.constant([i, 0]), size=28, **full)
    assert_gray(view.numpy(), atol=1e-6)
  recipe = device_augment.ViewRecipe(color_p=1.0, grayscale_p=1.0, blur_p=0.5,
                                     solarize_p=0.5)
  seeds = np.arange(8, dtype=np.uint32).reshape(4, 2)
  (view,) = device_augment.augment_views((images,), seeds, (recipe,))
  assert_gray(np.asarray(view), atol=1e-6)


def test_image_folder_that_mixes_channel_counts_reads_as_rgb(tmp_path):
  rng = np.random.default_rng(0)
  files = {"gray.png": (tf.io.encode_png, 1), "rgba.png": (tf.io.encode_png, 4),
           "gray.jpg": (tf.io.encode_jpeg, 1), "rgb.jpg": (tf.io.encode_jpeg, 3)}
  written = {}
  for split in ("train", "test"):
    for label in ("a", "b"):
      os.makedirs(tmp_path / split / label)
      for name, (encode, channels) in files.items():
        pixels = rng.integers(0, 255, (20, 20, channels), np.uint8)
        tf.io.write_file(str(tmp_path / split / label / name), encode(pixels))
        written[str(tmp_path / split / label / name)] = pixels
  c = mnist_config(dataset="image_folder", data_dir=str(tmp_path), num_train_examples=0)
  paths, _ = sources.image_folder_files(c, "test")
  for path, x in zip(paths, pipeline.as_numpy(sources.read(c, "test"))):
    assert x["image"].shape == (20, 20, 3), path
    if path.endswith(".png"):  # lossless: grayscale repeated, alpha dropped
      source = written[path]
      expected = np.repeat(source, 3, -1) if source.shape[-1] == 1 else source[..., :3]
      np.testing.assert_array_equal(x["image"], expected)
  assert first(pipeline.train_dataset(c, 8))["views"][0].shape == (8, 28, 28, 3)


# --- The mnist presets through the loop, the evaluations, the export, the pictures ---


@pytest.fixture(scope="module", params=["simclr_v2", "moco_v2"])
def mnist_run(request, tmp_path_factory):
  """(config, workdir) of 3 steps of a mnist preset, shrunk (width x0.125, batch 16)
  but at its 28 px, through the training loop on the real MNIST; kNN at 0 and 3."""
  small = dict(image_size=28, total_steps=3, eval_every_steps=3, checkpoint_every_steps=3)
  c = (tiny_config("mnist", **small) if request.param == "simclr_v2"
       else tiny_moco_config(moco_v2, "mnist", **small))
  c.knn.eval_at_start = True
  workdir = str(tmp_path_factory.mktemp(request.param))
  train.train_and_evaluate(c, workdir)
  return c, workdir


def shrunk(config, pretrained, **overrides):
  """An evaluation config on ``pretrained`` cut to seconds."""
  config.update(pretrained=pretrained, data_dir=SHARED_TFDS, batch_size=16, eval_batch_size=32,
                num_train_examples=256, num_eval_examples=64, total_steps=3, log_every_steps=1)
  config.update(overrides)
  return config


def test_mnist_preset_trains_and_the_knn_eval_and_export_read_its_checkpoint(mnist_run,
                                                                            tmp_path):
  c, workdir = mnist_run
  rows = read_metrics(workdir)
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
  assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
  knn_rows = {r["step"]: r["knn_top1"] for r in rows if "knn_top1" in r}
  assert sorted(knn_rows) == [0, 3] and all(0 <= v <= 100 for v in knn_rows.values())
  kc = shrunk(knn_config.get_config("cpu"), workdir)
  kc.knn.update(num_train_examples=c.knn.num_train_examples,
                num_eval_examples=c.knn.num_eval_examples, batch_size=c.knn.batch_size)
  result = knn_eval.train_and_evaluate(kc, str(tmp_path / "knn"))
  assert result["knn_top1"] == pytest.approx(knn_rows[3])  # the monitor's, from the checkpoint

  export.export(workdir, str(tmp_path / "encoder.npz"))
  arrays, meta = export.load(str(tmp_path / "encoder.npz"))
  assert arrays["stem_conv/kernel"].shape[2] == 3 and meta["step"] == "3"
  # The file's encoder on real MNIST test digits gives the checkpoint's features.
  images = first(pipeline.eval_dataset(c, "test", 8, num=8)[0])["image"]
  encoder = models.make_encoder(c.model, None)
  run = export.restore_run(workdir)
  params, stats = export.encoder_variables(run.params, run.batch_stats)
  want = encoder.apply({"params": params, "batch_stats": stats}, images, train=False)
  got = encoder.apply(export.unflatten(arrays), images, train=False)
  assert got.shape[0] == 8 and np.isfinite(got).all()
  np.testing.assert_array_equal(got, want)


# The rest does not depend on the method: SimCLR's run only.
simclr_only = pytest.mark.parametrize("mnist_run", ["simclr_v2"], indirect=True)


@simclr_only
def test_linear_probe_and_finetuning_of_an_mnist_run(mnist_run, tmp_path):
  _, workdir = mnist_run
  lin = linear.train_and_evaluate(
      shrunk(linear_config.get_config("cpu"), workdir, batch_size=32, total_steps=0,
             num_epochs=2.0), str(tmp_path / "linear"))
  ft = finetune.train_and_evaluate(
      shrunk(finetune_config.get_config("cpu_10pct"), workdir, num_train_examples=640),
      str(tmp_path / "finetune"))
  for result in (lin, ft):
    assert result["eval_count"] == 64 and 0 <= result["eval_top1"] <= 100


@simclr_only
def test_export_command_and_pictures_of_an_mnist_run(mnist_run, tmp_path):
  _, workdir = mnist_run
  out = str(tmp_path / "encoder.safetensors")
  r = subprocess.run([sys.executable, "-m", "cvrl_jax.export", f"--workdir={workdir}",
                      f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert r.returncode == 0, r.stderr[-2000:]
  assert export.load(out)[0]["stem_conv/kernel"].shape[2] == 3
  views = visualize.augmentation_picture(mnist_config(), num_images=2, num_views=3, scale=1)
  assert views.size == visualize.grid_size(2, 4, 28, captions=False)
  run = export.restore_run(workdir)
  run.config.data_dir = SHARED_TFDS
  retrieval = visualize.retrieval_picture(run, num_queries=2, k=3, bank_size=64,
                                          query_pool=32, batch=16, scale=1)
  assert retrieval.size == visualize.grid_size(2, 4, 28, captions=True)
  assert visualize.class_names(run.config)[:2] == ["0", "1"]


def test_an_encoder_pretrained_on_rgb_transfers_to_mnist(tmp_path):
  workdir, _, _ = fake_workdir(tmp_path, width=0.125)  # CIFAR-10's 32 px RGB preset
  config = shrunk(linear_config.get_config("cpu"), workdir, dataset="mnist", batch_size=32,
                  num_train_examples=128, num_eval_examples=32, total_steps=0, num_epochs=1.0)
  result = linear.train_and_evaluate(config, str(tmp_path / "linear"))
  assert result["eval_count"] == 32 and 0 <= result["eval_top1"] <= 100
