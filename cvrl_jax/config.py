"""The configuration contract every method's config starts from.

Scripts and tests rely on these keys: ``dataset``, ``data_dir``, ``batch_size``
(global), ``total_steps`` (when set, wins over ``num_epochs``), ``seed``,
``log_every_steps``, ``eval_every_steps``, ``checkpoint_every_steps``.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "simclr"
  c.dataset = "imagenet2012"
  c.data_dir = ""              # TFDS data dir; empty: $TFDS_DATA_DIR or the TFDS default
  c.train_split = "train"
  c.eval_split = "validation"
  c.num_train_examples = 0     # 0: the whole split; else its first N (quick runs)
  c.cache = False              # cache decoded images in memory (small datasets)
  c.shuffle_buffer = 50_000
  c.image_size = 224
  c.eval_crop_proportion = 0.875

  c.batch_size = 4096          # global, over all devices of all processes
  c.num_epochs = 100.0         # may be fractional; total_steps, when set, wins
  c.total_steps = 0            # 0: derived from num_epochs
  c.seed = 0
  c.num_devices = 0            # 0: every device; N: the first N (tests, benchmarks)

  c.model = ml_collections.ConfigDict(dict(
      name="resnet",  # or "vit" (configs/moco_v3.py:vit_small)
      depth=50, width_multiplier=1.0, sk_ratio=0.0, stem="imagenet", bn_momentum=0.9,
      dtype="auto",   # backbone compute: "auto" = bfloat16 on TPU, else float32
      remat=False))   # recompute blocks in the backward pass (benchmarks/memory.py)

  c.augment = ml_collections.ConfigDict(dict(
      crop_area=(0.08, 1.0), color_strength=1.0, grayscale_p=0.2,
      blur_p=(0.5, 0.5), solarize_p=(0.0, 0.0),
      # True: the host only crops and flips (uint8 views); colour, grayscale, blur
      # and solarize run on the accelerator in the step (cvrl_jax/device_augment.py).
      on_device=False))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="lars", base_lr=0.3, lr_scaling="linear", weight_decay=1e-6,
      momentum=0.9, warmup_epochs=10.0, schedule="cosine", trust_coefficient=0.001))

  c.knn = ml_collections.ConfigDict(dict(
      k=200, temperature=0.1, batch_size=1024, eval_at_start=True,
      num_train_examples=0, num_eval_examples=0))  # 0: the whole split

  c.log_every_steps = 100
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 5000
  c.max_to_keep = 3
  return c


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
        f"{config.get('num_views', 2)} views: give one value for all views, or one "
        f"per view, e.g. --config.augment.{name}='(0.5,0.5)'.")
  return value[view]


def use_cifar10(c: ml_collections.ConfigDict, depth: int = 18) -> ml_collections.ConfigDict:
  """Dataset, model and schedule of the SimCLR README's CIFAR-10 runs (any method).

  Augmentation back on the host: at 32 px tf.data keeps up with the accelerator.
  """
  c.dataset = "cifar10"
  c.augment.on_device = False
  c.eval_split = "test"
  c.cache = True
  c.image_size = 32
  c.eval_crop_proportion = 1.0
  c.batch_size = 512
  c.num_epochs = 1000
  c.model.depth = depth
  c.model.stem = "cifar"
  c.knn.batch_size = 1024
  c.log_every_steps = 50
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 2000
  return c


def use_cpu(c: ml_collections.ConfigDict, total_steps: int) -> ml_collections.ConfigDict:
  """Shrinks a CIFAR-10 config to minutes on a 2-core CPU (docs/benchmarks.md).

  A quarter-width ResNet-18 (0.7 M parameters), batch 128 (about one step per
  second on 2 cores split into 8 XLA devices), and a kNN monitor on 10k train /
  2k test images keep the run near 10-15 minutes.
  """
  c.model.width_multiplier = 0.25
  c.batch_size = 128
  c.num_epochs = 0
  c.total_steps = total_steps
  c.optimizer.warmup_epochs = 0.2  # 10% of the steps, like SimCLR's 10 of 100 epochs
  c.knn.num_train_examples = 10_000
  c.knn.num_eval_examples = 2_000
  c.knn.batch_size = 512
  c.log_every_steps = 25
  c.eval_every_steps = total_steps // 2
  c.checkpoint_every_steps = total_steps // 2
  return c


def use_multicrop(c: ml_collections.ConfigDict, num_small: int, size: int,
                  crop_area: tuple[float, float], blur_p: float = 0.0,
                  solarize_p: float = 0.0) -> ml_collections.ConfigDict:
  """Multi-crop (SwAV, DINO): ``num_small`` extra crops of ``size`` px covering
  ``crop_area`` of the image, in each batch as ``"small_views"`` beside the views."""
  c.multicrop = ml_collections.ConfigDict(dict(
      num_small=num_small, size=size, crop_area=crop_area, blur_p=blur_p,
      solarize_p=solarize_p))
  return c
