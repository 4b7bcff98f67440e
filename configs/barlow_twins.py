r"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction").

    python -m cvrl_jax.main --config=configs/barlow_twins.py --workdir=/tmp/barlow_twins

ImageNet (default): ResNet-50, 224 px, batch 2048, LARS lr 0.2 x B/256 (the
paper's rate for weights; its biases and BN parameters take 0.0048 x B/256,
here the same as weights but excluded from decay and trust ratio), weight decay
1.5e-6, 10 warm-up epochs then cosine, 1000 epochs; projector 8192-8192-8192
(BN and ReLU on the hidden layers, a linear output), lambda 0.0051; BYOL's
asymmetric augmentations (blur p=1.0 / 0.1, solarize p=0.0 / 0.2). The paper
reports 73.2% linear top-1; not reproduced here.

The 224 px variants run colour jitter, grayscale, blur and solarize on the
accelerator (``augment.on_device``); ``cifar10`` / ``cpu`` keep them in tf.data.

Variants (``--config=configs/barlow_twins.py:NAME``):

* ``cifar10``: ResNet-18 with the CIFAR stem, 32 px, batch 512, LARS lr 0.3 x
  B/256, weight decay 1e-4, projector 2048-2048-2048, no blur, 1000 epochs (no
  published reference run of this exact recipe).

      python -m cvrl_jax.main --config=configs/barlow_twins.py:cifar10 \
          --config.data_dir=../shared/tfds --workdir=/tmp/barlow_twins_cifar10

* ``cpu``: the ``cifar10`` recipe shrunk to a 2-core laptop CPU: ResNet-18 x0.25,
  batch 128, 500 steps (1.3 epochs), LARS lr 4.0 x B/256 (SimCLR's and MoCo v3's
  cpu rate), projector 1024-1024-1024:

      python -m cvrl_jax.main --config=configs/barlow_twins.py:cpu \
          --config.data_dir=../shared/tfds --workdir=/tmp/barlow_twins_cpu

  Measured 2026-11-30 on the 2-core CPU (8 simulated devices): kNN top-1 (10k
  train bank, 2k test queries) 26.85% at step 0 (random init) -> 30.6% at step 250
  -> 32.85% at step 500; 10.8 min wall, partly sharing the cores with another job.
"""

import ml_collections

from cvrl_jax import config as config_lib

VARIANTS = ("imagenet", "cifar10", "cpu")


def get_config(variant: str = "imagenet") -> ml_collections.ConfigDict:
  # lambd 0.0051; a projector without last BN.
  return recipe(config_lib.base_config("barlow_twins"), variant)


def recipe(c: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """The docstring's ``variant`` on ``c``, a method's base config (VICReg's
  recipe is this one, but for its weight decay: configs/vicreg.py)."""
  config_lib.check_variant(variant, VARIANTS)
  c.head.update(num_layers=3, hidden_dim=8192, output_dim=8192)
  c.batch_size = 2048
  c.num_epochs = 1000
  c.optimizer.update(name="lars", base_lr=0.2, lr_scaling="linear", weight_decay=1.5e-6,
                     momentum=0.9, warmup_epochs=10.0, schedule="cosine")
  c.augment.update(crop_area=(0.08, 1.0), color_jitter_strengths=(0.4, 0.4, 0.2, 0.1),
                   color_p=0.8, grayscale_p=0.2, blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2))
  c.augment.on_device = True  # 224 px; use_cifar10 turns it off
  if variant == "imagenet":
    return c
  config_lib.use_cifar10(c)
  c.head.update(hidden_dim=2048, output_dim=2048)
  c.optimizer.update(base_lr=0.3, weight_decay=1e-4)
  c.augment.blur_p = (0.0, 0.0)
  if variant == "cpu":
    config_lib.use_cpu(c, total_steps=500)
    c.optimizer.base_lr = 4.0
    c.head.update(hidden_dim=1024, output_dim=1024)
  return c
