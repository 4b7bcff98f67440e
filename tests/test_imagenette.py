"""The ImageNet path on real photographs: the 224 px presets' input (JPEG decode,
random resized crop, flip, colour on the device) and ResNet-50 steps on the real
Imagenette JPEGs (../shared/imagenette), on 1 and 8 devices; the imagenette presets
of SimCLR v2, MoCo v2, BYOL and MoCo v3 through the training loop."""

import os
import types

import jax
import numpy as np
import pytest

from configs import byol, moco_v2, moco_v3, simclr_v2
from conftest import SHARED_TFDS
from cvrl_jax import methods, optim, parallel, step as step_lib, train
from cvrl_jax.data import device_augment, pipeline, sources
from helpers import read_metrics

IMAGENETTE = os.path.join(os.path.dirname(SHARED_TFDS), "imagenette")
NUM_CLASSES = 10
IMAGENETTE_MODULES = (simclr_v2, moco_v2, byol, moco_v3)


def imagenet_on_imagenette():
  """``simclr_v2.py:imagenet`` as it is (ResNet-50, 224 px, colour on the device) on
  the first 64 Imagenette train images, batch 8, 2 steps, no warm-up (so the first
  step moves the weights)."""
  c = simclr_v2.get_config("imagenet")
  c.update(dataset="image_folder", data_dir=IMAGENETTE, eval_split="val", batch_size=8,
           num_train_examples=64, total_steps=2)
  c.optimizer.warmup_epochs = 0.0
  return c


def first(ds):
  return next(pipeline.as_numpy(ds))


def test_imagenette_reads_as_the_imagenet_presets_expect():
  c = imagenet_on_imagenette()
  assert sources.num_examples(c, "train") == 9_469
  assert sources.num_examples(c, "val") == 3_925
  assert sources.num_classes(c) == NUM_CLASSES
  assert sources.class_names(c)[:2] == ["n01440764", "n02102040"]  # tench, springer
  assert c.augment.on_device and c.image_size == 224 and c.model.depth == 50
  batch = first(pipeline.train_dataset(c, 8))
  assert set(batch) == {"views", "label", "aug_seed"}
  for view in batch["views"]:  # decoded, cropped and flipped only: uint8 for the device
    assert view.shape == (8, 224, 224, 3) and view.dtype == np.uint8
    assert view.std() > 20  # photographs, not a constant or padding
  assert not np.array_equal(batch["views"][0], batch["views"][1])
  assert batch["aug_seed"].shape == (8, 2) and batch["aug_seed"].dtype == np.uint32
  assert ((batch["label"] >= 0) & (batch["label"] < NUM_CLASSES)).all()
  # The colour part, as the step runs it: float views in [0, 1], changed.
  views = jax.jit(device_augment.batch_fn(c))(batch)["views"]
  for raw, view in zip(batch["views"], views):
    view = np.asarray(view)
    assert view.shape == (8, 224, 224, 3) and 0 <= view.min() and view.max() <= 1
    assert np.abs(view - raw / 255).mean() > 0.01
  evaluation = first(pipeline.eval_dataset(c, "val", 8, num=8)[0])
  assert evaluation["image"].shape == (8, 224, 224, 3)
  assert ((evaluation["label"] >= 0) & (evaluation["label"] < NUM_CLASSES)).all()


def test_input_benchmark_times_every_stage_on_the_real_files():
  from benchmarks import input_pipeline, throughput
  c = imagenet_on_imagenette()
  for stage in input_pipeline.STAGES:
    wall, cpu = throughput.dataset_throughput(input_pipeline.stage_dataset(c, stage, 8), 8,
                                              num_batches=2, threads=1)
    assert wall > 0 and cpu > 0, stage


def real_steps(config, num_devices: int):
  """``config.total_steps`` train steps on ``num_devices`` from the real input
  pipeline, as train.py runs them: ([state after init, after each step] as numpy
  params and batch_stats, [each step's metrics])."""
  c = config
  mesh = parallel.make_mesh(num_devices)
  method = methods.get_method(c, NUM_CLASSES, c.total_steps)
  tx, _ = optim.create_optimizer(c, c.batch_size, c.total_steps, c.total_steps)
  shape = (c.batch_size // num_devices, c.image_size, c.image_size, 3)
  state = step_lib.create_train_state(method, tx, jax.random.PRNGKey(0), shape, mesh)
  step = step_lib.make_train_step(method, tx, mesh, device_augment.batch_fn(c))
  rng = jax.device_put(jax.random.PRNGKey(1), parallel.replicated(mesh))

  def kept(s):
    return types.SimpleNamespace(**{k: jax.tree.map(np.asarray, getattr(s, k))
                                    for k in ("params", "batch_stats")})

  states, history = [kept(state)], []
  batches = pipeline.as_numpy(pipeline.train_dataset(c, c.batch_size))
  for _ in range(c.total_steps):
    batch = next(batches)
    assert ((batch["label"] >= 0) & (batch["label"] < NUM_CLASSES)).all()
    state, metrics = step(state, parallel.host_to_global(batch, mesh), rng)
    states.append(kept(state))
    history.append({k: float(v.compute()) for k, v in metrics.items()})
  return states, history


def assert_same_first_update(s1, s8, rtol: float = 1e-2):
  """The same initial weights on both meshes, and the first step's change of every
  parameter and BatchNorm statistic the same to ``rtol`` of its norm (measured:
  at most 1.1e-3, the stem's kernel, whose gradient crosses all 50 layers).

  Whole arrays, not elements, and the first step only: by the second, the
  residual branches whose last BatchNorm starts at scale 0 take their first steps,
  from gradients that passed through scales of ~1e-4 and carry the meshes'
  different rounding to a few percent of a small update. The second step's loss,
  computed with the first step's weights, agrees to 1e-4 (checked by the caller).
  """
  for name in ("params", "batch_stats"):
    start1, start8 = jax.tree.leaves(getattr(s1[0], name)), jax.tree.leaves(getattr(s8[0], name))
    after1, after8 = jax.tree.leaves(getattr(s1[1], name)), jax.tree.leaves(getattr(s8[1], name))
    for i, (a0, b0, a, b) in enumerate(zip(start1, start8, after1, after8, strict=True)):
      np.testing.assert_allclose(a0, b0, rtol=1e-6, atol=1e-7, err_msg=name)
      d1, d8 = a - a0, b - b0
      assert np.linalg.norm(d8 - d1) <= rtol * np.linalg.norm(d1) + 1e-7, (name, i, a.shape)


@pytest.mark.heavy  # 5 min on 2 CPU cores, mostly compiling ResNet-50 twice
def test_resnet50_at_224_px_trains_alike_on_one_and_eight_devices():
  """Global NT-Xent and BatchNorm over the global batch, per-example device
  augmentation: on 8 devices (1 image each) the same losses and updates as on 1."""
  assert jax.device_count() == 8
  config = imagenet_on_imagenette()
  (s1, h1), (s8, h8) = real_steps(config, 1), real_steps(config, 8)
  assert len(h1) == len(h8) == 2
  for step, (m1, m8) in enumerate(zip(h1, h8)):
    assert np.isfinite(m1["loss"]) and m1["loss"] > 0, step
    assert m8["loss"] == pytest.approx(m1["loss"], rel=2e-4), (step, m1, m8)
    assert m8["probe_loss"] == pytest.approx(m1["probe_loss"], rel=1e-3), (step, m1, m8)
    # The norm of 25 M gradients after a full-rate step of 50 layers: the meshes'
    # reduction orders differ by ~2e-3 there (a wrong scale would be O(1)).
    assert m8["grad_norm"] == pytest.approx(m1["grad_norm"], rel=1e-2), (step, m1, m8)
    # Top-1 of 8 images: a near-tie of the (zero-initialised) probe's logits may
    # round either way, one image is 12.5 points.
    assert abs(m8["probe_top1"] - m1["probe_top1"]) <= 100 / 8, (step, m1, m8)
  assert_same_first_update(s1, s8)
  kernel = s8[0].params["encoder"]["stem_conv"]["kernel"]
  assert kernel.shape == (7, 7, 3, 64)  # the ImageNet stem of a full-width ResNet-50
  assert not np.allclose(s8[1].params["encoder"]["stem_conv"]["kernel"], kernel)
  assert s8[-1].params["encoder"]["stage4_block3"]["conv3"]["kernel"].shape[-1] == 2048


def tiny_imagenette(module):
  """``module``'s imagenette preset shrunk to seconds: 32 px, width x0.125, batch 16
  of the first 64 train images, 2 steps, kNN on 64 train / 32 val images at 0 and 2."""
  c = module.get_config("imagenette")
  c.update(data_dir=IMAGENETTE, image_size=32, batch_size=16, num_train_examples=64,
           total_steps=2, log_every_steps=1, eval_every_steps=2, checkpoint_every_steps=2)
  c.model.width_multiplier = 0.125
  c.head.update(hidden_dim=32, output_dim=16)
  c.predictor.hidden_dim = 32
  if c.method == "moco":
    c.moco.queue_size = 32
  c.knn.update(num_train_examples=64, num_eval_examples=32, batch_size=32)
  return c


def test_imagenette_presets_are_the_cpu_recipes_on_imagenette():
  for module in IMAGENETTE_MODULES:
    c, cpu = module.get_config("imagenette"), module.get_config("cpu")
    assert (c.dataset, c.train_split, c.eval_split) == ("image_folder", "train", "val")
    assert (c.image_size, c.model.stem, c.model.depth) == (96, "imagenet", 18)
    assert c.model.width_multiplier == cpu.model.width_multiplier
    assert c.optimizer.base_lr == cpu.optimizer.base_lr and c.batch_size == cpu.batch_size
    assert (c.knn.num_train_examples, c.knn.num_eval_examples) == (0, 0)  # whole splits
    name = module.__name__.split(".")[-1]
    assert f"--config=configs/{name}.py:imagenette" in module.__doc__
    assert "--config.data_dir=../shared/imagenette" in module.__doc__


@pytest.mark.parametrize("module", [
    pytest.param(m, marks=pytest.mark.heavy) if m.__name__.endswith("moco_v3") else m
    for m in IMAGENETTE_MODULES], ids=lambda m: m.__name__.split(".")[-1])  # v3: 3 min
def test_imagenette_preset_trains_through_the_loop(module, tmp_path):
  c = tiny_imagenette(module)
  train.train_and_evaluate(c, str(tmp_path))
  rows = read_metrics(str(tmp_path))
  losses = [r["loss"] for r in rows if "loss" in r]
  assert len(losses) == 2 and np.isfinite(losses).all()
  knn = {r["step"]: r["knn_top1"] for r in rows if "knn_top1" in r}
  assert sorted(knn) == [0, 2] and all(0 <= v <= 100 for v in knn.values())
