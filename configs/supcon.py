r"""SupCon (Khosla et al. 2020, "Supervised Contrastive Learning"): SimCLR's
network and training with labels choosing the positives (supervised).

    python -m cvrl_jax.main --config=configs/supcon.py --workdir=/tmp/supcon

ImageNet (default): ResNet-50, 224 px, batch 4096, LARS lr 0.3 x B/256, weight
decay 1e-6, 10 warm-up epochs then cosine, 700 epochs, temperature 0.1, a
2048-2048-128 projection head (SimCLR v1's, with BN), SimCLR's augmentations.
The paper trains 700 epochs (with AutoAugment, not available here); the
optimiser settings here are SimCLR v1's, not the paper's. Not reproduced here.

The 224 px variants run colour jitter, grayscale, blur and solarize on the
accelerator (``augment.on_device``); ``cifar10`` / ``cpu`` keep them in tf.data.

Variants (``--config=configs/supcon.py:NAME``):

* ``cifar10``: ResNet-18 with the CIFAR stem, 32 px, batch 512, LARS lr 1.0 x
  B/256, weight decay 1e-4, temperature 0.1, colour strength 0.5, no blur, 1000
  epochs (SimCLR's CIFAR-10 recipe with SupCon's temperature).

      python -m cvrl_jax.main --config=configs/supcon.py:cifar10 \
          --config.data_dir=../shared/tfds --workdir=/tmp/supcon_cifar10

* ``cpu``: the ``cifar10`` recipe shrunk to a 2-core laptop CPU like SimCLR's:
  ResNet-18 x0.25, batch 128, 500 steps (1.3 epochs), LARS lr 4.0 x B/256, a
  128-128-64 head:

      python -m cvrl_jax.main --config=configs/supcon.py:cpu \
          --config.data_dir=../shared/tfds --workdir=/tmp/supcon_cpu

  Measured 2026-11-30 on the 2-core CPU (8 simulated devices): kNN top-1 (10k
  train bank, 2k test queries) 26.85% at step 0 (random init) -> 30.0% at step 250
  -> 35.35% at step 500; 8.8 min wall, partly sharing the cores with another job.
  SupCon uses the labels, so it is not a self-supervised figure.
"""

import ml_collections

from cvrl_jax import config as config_lib

VARIANTS = ("imagenet", "cifar10", "cpu")


def get_config(variant: str = "imagenet") -> ml_collections.ConfigDict:
  config_lib.check_variant(variant, VARIANTS)
  c = config_lib.base_config("supcon")  # temperature 0.1
  c.head.update(num_layers=2, hidden_dim=2048, output_dim=128)
  c.num_epochs = 700
  c.optimizer.update(name="lars", base_lr=0.3, lr_scaling="linear", weight_decay=1e-6)
  c.augment.on_device = True  # 224 px; use_cifar10 turns it off
  if variant == "imagenet":
    return c
  config_lib.use_cifar10(c)
  c.head.hidden_dim = 512
  c.augment.update(color_strength=0.5, blur_p=(0.0, 0.0))
  c.optimizer.update(base_lr=1.0, weight_decay=1e-4)
  if variant == "cpu":
    config_lib.use_cpu(c, total_steps=500)
    c.head.update(hidden_dim=128, output_dim=64)
    c.optimizer.base_lr = 4.0
  return c
