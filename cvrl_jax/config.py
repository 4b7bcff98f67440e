"""Every key a pre-training run reads, declared once with its type and default.

``base_config(method)`` is where each config in ``configs/`` starts: the shared
keys below, and the method's own hyper-parameters under ``config.<method>``
(``config.simclr.temperature``, ``config.moco_v3.momentum``, ...), which its class
in ``cvrl_jax/methods/`` declares in ``Method.defaults``. Nothing in the library
repeats a default: it reads ``config.key``, and an override of a key that does not
exist is refused (``--config.batchsize=256``).

``upgrade`` turns the config.json of a run written before a key moved into a
current config, for evaluations and exports of old runs.
"""

import copy
from typing import Any, Mapping, Sequence

import ml_collections
from ml_collections import config_dict

from cvrl_jax import methods


def model_section() -> ml_collections.ConfigDict:
  """``config.model``: the encoder (``models.make_encoder``), for pre-training and
  for the networks evaluations record."""
  return ml_collections.ConfigDict(dict(
      name="resnet",  # or "vit" (configs/moco_v3.py:vit_small), or "lab_split" (CMC:
      # one ResNet on L, one on ab, each of half width_multiplier; configs/cmc.py)
      # ResNet: depth, width_multiplier, selective kernels (SimCLR v2), stem
      # ("imagenet" or "cifar"), BatchNorm momentum.
      depth=50, width_multiplier=1.0, sk_ratio=0.0, stem="imagenet", bn_momentum=0.9,
      norm="batch",  # ResNet normalisation: "batch", or "layer" (CPC v2)
      # CPC: (patch size, stride) in px; the encoder encodes each patch of that grid
      # and pools them (models/patches.py). Size 0: the whole image, no grid.
      patch_grid=(0, 0),
      # ViT: width, heads and patch (with depth: models/vit.py VARIANTS), and MoCo
      # v3's frozen random patch projection.
      width=384, num_heads=12, patch_size=16, frozen_patch_embed=False,
      dtype="auto",   # backbone compute: "auto" = bfloat16 on TPU, else float32
      remat=False))   # recompute blocks in the backward pass (benchmarks/memory.py)


def base_config(method: str) -> ml_collections.ConfigDict:
  """The shared keys with their defaults, and ``method``'s own under its name."""
  c = ml_collections.ConfigDict()
  c.task = "pretrain"          # what `python -m cvrl_jax.main` runs (evaluations: their name)
  c.method = method
  c.dataset = "imagenet2012"
  c.data_dir = ""              # TFDS data dir; empty: $TFDS_DATA_DIR or the TFDS default
  c.train_split = "train"
  c.eval_split = "validation"
  c.num_train_examples = 0     # 0: the whole split; else its first N (quick runs)
  c.cache = False              # cache decoded images in memory (small datasets)
  c.skip_bad_images = False    # image folders: leave out files that are not whole images
  c.shuffle_buffer = 50_000
  c.image_size = 224
  c.eval_crop_proportion = 0.875
  c.num_views = 2              # augmented views of each image per batch
  c.example_index = False      # batches also carry "index", each example's position in the split

  c.batch_size = 4096          # global, over all devices of all processes
  c.num_epochs = 100.0         # may be fractional; total_steps, when set, wins
  c.total_steps = 0            # 0: derived from num_epochs
  c.seed = 0
  c.num_devices = 0            # 0: every device; N: the first N (tests, benchmarks)

  c.model = model_section()

  # The projection head and (BYOL, SimSiam, MoCo v3, NNCLR) the predictor, which
  # maps back to head.output_dim: num_layers Dense layers, BN after each (not after
  # the last unless last_bn), ReLU between them (models/heads.py MLPHead).
  c.head = ml_collections.ConfigDict(dict(
      num_layers=2, hidden_dim=2048, output_dim=128, use_bn=True, last_bn=True))
  c.predictor = ml_collections.ConfigDict(dict(
      num_layers=2, hidden_dim=4096, use_bn=True, last_bn=False))

  c.augment = ml_collections.ConfigDict(dict(
      crop_area=(0.08, 1.0),
      flip=True,  # random horizontal flip of each crop (off for digits: use_mnist)
      # Colour jitter: SimCLR's strength s gives (0.8 s, 0.8 s, 0.8 s, 0.2 s) for
      # (brightness, contrast, saturation, hue), unless color_jitter_strengths
      # gives them (MoCo v2, BYOL); applied with probability color_p. Grayscale
      # data (read as 3 equal channels) stays gray under every op; saturation, hue
      # and grayscale_p change nothing there, so the mnist presets set them to 0.
      color_strength=1.0, color_jitter_strengths=config_dict.placeholder(tuple), color_p=0.8,
      grayscale_p=0.2,
      blur_p=(0.5, 0.5), solarize_p=(0.0, 0.0),  # one per view, or one for all
      # SimCLR figure 4's ablations, after the ops above (data/augment.py), host only:
      rotate_p=0.0,  # rotate by 90, 180 or 270 degrees
      cutout_p=0.0,  # zero one square of 10-50% of the side
      noise_p=0.0,   # add Gaussian noise, sigma ~ U[0, 0.1]
      sobel_p=0.0,   # replace by the Sobel edge magnitude (gray, 3 channels)
      # True: the host only crops and flips (uint8 views); colour, grayscale, blur
      # and solarize run on the accelerator in the step (cvrl_jax/data/device_augment.py).
      on_device=False))
  # Multi-crop (SwAV, DINO; use_multicrop): num_small extra crops of size px per image.
  c.multicrop = ml_collections.ConfigDict(dict(
      num_small=0, size=96, crop_area=(0.05, 0.14), blur_p=0.0, solarize_p=0.0))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="lars", base_lr=0.3, lr_scaling="linear", weight_decay=1e-6,
      momentum=0.9, nesterov=False, warmup_epochs=10.0, schedule="cosine",
      step_boundaries=(),  # schedule="step": fractions of training where lr drops 10x
      trust_coefficient=0.001))

  c.knn = ml_collections.ConfigDict(dict(
      k=200, temperature=0.1, batch_size=1024, eval_at_start=True,
      num_train_examples=0, num_eval_examples=0))  # 0: the whole split

  c.log_every_steps = 100
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 5000
  c.max_to_keep = 3

  c.update(copy.deepcopy(methods.method_class(method).defaults))
  return c


def check_variant(variant: str, variants: Sequence[str]) -> None:
  """Refuses a ``--config=configs/X.py:VARIANT`` that ``X`` does not define."""
  if variant not in variants:
    *others, last = variants
    choices = f"{', '.join(others)} or {last}" if others else last
    raise ValueError(f"Unknown variant {variant!r}: use {choices}.")


def view_setting(config: ml_collections.ConfigDict, name: str, view: int):
  """``config.augment[name]`` for view ``view``: one value for all views, or one per view.

  Shared by the host and the device augmentation so both read per-view tuples
  (BYOL's blur p=1.0 / 0.1) alike.
  """
  value = config.augment[name]
  if not isinstance(value, (tuple, list)):
    return value
  if len(value) == 1:  # `--config.augment.blur_p=0.0` on a per-view field gives (0.0,)
    return value[0]
  if view >= len(value):
    raise ValueError(
        f"config.augment.{name}={tuple(value)} has {len(value)} entries for "
        f"{config.num_views} views: give one value for all views, or one "
        f"per view, e.g. --config.augment.{name}='(0.5,0.5)'.")
  return value[view]


def jitter_strengths(aug: ml_collections.ConfigDict) -> tuple[float, float, float, float]:
  """(brightness, contrast, saturation, hue) of ``config.augment``, as
  augment.color_jitter derives them from ``color_strength`` unless given."""
  explicit = aug.color_jitter_strengths
  if explicit is not None:
    if len(explicit) != 4:
      raise ValueError("color_jitter_strengths must be (brightness, contrast, "
                       f"saturation, hue), got {explicit}.")
    return tuple(float(v) for v in explicit)
  s = float(aug.color_strength)
  return (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)


def use_cifar10(c: ml_collections.ConfigDict, depth: int = 18) -> ml_collections.ConfigDict:
  """Dataset, model and schedule of the SimCLR README's CIFAR-10 runs (any method).

  Augmentation back on the host: at 32 px tf.data keeps up with the accelerator.
  """
  c.update(dataset="cifar10", eval_split="test", cache=True, image_size=32,
           eval_crop_proportion=1.0, batch_size=512, num_epochs=1000, log_every_steps=50,
           eval_every_steps=5000, checkpoint_every_steps=2000)
  c.augment.on_device = False
  c.model.update(depth=depth, stem="cifar")
  c.knn.batch_size = 1024
  return c


def use_cpu(c: ml_collections.ConfigDict, total_steps: int) -> ml_collections.ConfigDict:
  """Shrinks a CIFAR-10 config to minutes on a 2-core CPU (docs/benchmarks.md).

  A quarter-width ResNet-18 (0.7 M parameters), batch 128 (about one step per
  second on 2 cores split into 8 XLA devices), and a kNN monitor on 10k train /
  2k test images keep the run near 10-15 minutes.
  """
  c.model.width_multiplier = 0.25
  c.update(batch_size=128, num_epochs=0, total_steps=total_steps, log_every_steps=25,
           eval_every_steps=total_steps // 2, checkpoint_every_steps=total_steps // 2)
  c.optimizer.warmup_epochs = 0.2  # 10% of the steps, like SimCLR's 10 of 100 epochs
  c.knn.update(num_train_examples=10_000, num_eval_examples=2_000, batch_size=512)
  return c


MNIST_TRAIN_EXAMPLES = 60_000


def use_mnist(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """MNIST at its own 28 px in place of CIFAR-10, in a ``use_cpu`` preset.

  The digits are read as 3 equal channels (``data/sources.py``). Of the colour
  augmentation only brightness and contrast act on them: saturation, hue and the
  grayscale conversion are skipped (set to 0), because a gray image has no colour
  for them to change; a recipe that keeps them gets the same views at more cost
  (on R = G = B they leave the image gray: tests/test_mnist.py). Crops cover at
  least 20% of the image (MoCo's floor; 8% of a 28 px digit is an 8 px patch,
  often blank) and are not flipped (a mirrored 2 or 7 is no digit). The kNN
  monitor runs at the start and the end only, with the first 10k train images as
  its bank and all 10k test images as queries.
  """
  brightness, contrast, _, _ = jitter_strengths(c.augment)
  c.update(dataset="mnist", image_size=28, eval_every_steps=c.total_steps,
           checkpoint_every_steps=c.total_steps)
  c.augment.update(crop_area=(0.2, 1.0), flip=False, grayscale_p=0.0,
                   color_jitter_strengths=(brightness, contrast, 0.0, 0.0))
  # 10% of the steps, as use_cpu's 0.2 epochs are on CIFAR-10.
  c.optimizer.warmup_epochs = 0.1 * c.total_steps * c.batch_size / MNIST_TRAIN_EXAMPLES
  c.knn.update(num_train_examples=10_000, num_eval_examples=0)
  return c


IMAGENETTE_TRAIN_EXAMPLES = 9_469


def use_imagenette(c: ml_collections.ConfigDict, total_steps: int
                   ) -> ml_collections.ConfigDict:
  """Imagenette (10 ImageNet classes, real 224 px JPEGs, ``../shared/imagenette``) in
  place of CIFAR-10, in a ``use_cpu`` preset (its model, batch and rate), for
  ``total_steps`` steps with the kNN monitor at the start, the middle and the end.

  Read as an image folder (``--config.data_dir`` is its root) with splits train /
  val. Each view is a random resized crop of the 224 px photograph resized to 96 px
  and the encoder has the ImageNet stem (stride 4, as at 224 px), so its stages see
  24 px maps: 0.6x the FLOPs of the CIFAR stem at 32 px, and the model that
  transfers to 224 px. The augmentation stays on the host (``use_cifar10``): after
  the crop the colour ops work on 96 px images, cheap in tf.data, and on a CPU the
  "device" is the same two cores. Images are decoded every epoch rather than cached
  (9,469 decoded 224 px images are 1.4 GB). The kNN monitor uses the whole splits:
  a bank of all 9,469 train images, all 3,925 val images as queries.
  """
  c.update(dataset="image_folder", train_split="train", eval_split="val", cache=False,
           image_size=96, eval_crop_proportion=0.875, total_steps=total_steps,
           eval_every_steps=total_steps // 2, checkpoint_every_steps=total_steps // 2)
  c.model.stem = "imagenet"
  # 10% of the steps, as use_cpu's 0.2 epochs are on CIFAR-10.
  c.optimizer.warmup_epochs = 0.1 * c.total_steps * c.batch_size / IMAGENETTE_TRAIN_EXAMPLES
  c.knn.update(num_train_examples=0, num_eval_examples=0)
  return c


def use_multicrop(c: ml_collections.ConfigDict, num_small: int, size: int,
                  crop_area: tuple[float, float], blur_p: float = 0.0,
                  solarize_p: float = 0.0) -> ml_collections.ConfigDict:
  """Multi-crop (SwAV, DINO): ``num_small`` extra crops of ``size`` px covering
  ``crop_area`` of the image, in each batch as ``"small_views"`` beside the views."""
  c.multicrop.update(num_small=num_small, size=size, crop_area=crop_area, blur_p=blur_p,
                     solarize_p=solarize_p)
  return c


# Keys that moved, by method: (old dotted path, new dotted path).
_MOVED = {
    "simclr": [("temperature", "simclr.temperature"),
               ("representation_layer", "simclr.representation_layer")],
    "supcon": [("temperature", "supcon.temperature")],
    "moco_v3": [("moco", "moco_v3")],
}


def _merged(defaults: dict, values: Mapping[str, Any]) -> dict:
  """``defaults`` with ``values`` put in, section by section."""
  out = dict(defaults)
  for key, value in values.items():
    if isinstance(value, Mapping) and isinstance(out.get(key), dict):
      out[key] = _merged(out[key], value)
    else:
      out[key] = value
  return out


def upgrade(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A run's config.json (as a dict) in today's keys.

  Pre-training configs written before the keys moved (no ``task``, SimCLR's and
  SupCon's top-level ``temperature``, MoCo v3's ``moco`` section, keys not yet
  declared) come back with the moved keys in their place and every missing key at
  today's default of that method; a current config comes back as it is. An
  evaluation's config (``task`` other than "pretrain") comes back as it is, but
  for the encoder it records (``network.model``), completed likewise.
  """
  d = copy.deepcopy(dict(saved))
  if d.get("task", "pretrain") != "pretrain":
    if "network" in d:  # the encoder it trained, with keys declared since
      d["network"]["model"] = _merged(model_section().to_dict(), d["network"]["model"])
    return ml_collections.ConfigDict(d)
  for old, new in _MOVED.get(d["method"], []):
    if old in d:
      *parents, leaf = new.split(".")
      section = d
      for name in parents:
        section = section.setdefault(name, {})
      section[leaf] = d.pop(old)
  return ml_collections.ConfigDict(_merged(base_config(d["method"]).to_dict(), d))
