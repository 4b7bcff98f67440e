r"""SimCLR v1 (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
Visual Representations").

    python -m cvrl_jax.main --config=configs/simclr_v1.py --workdir=/tmp/simclr_v1

ImageNet (default): ResNet-50, 224 px, batch 4096, LARS, lr 0.3 x B/256 (for
small batches the paper's alternative is --config.optimizer.base_lr=0.075
--config.optimizer.lr_scaling=sqrt), weight decay 1e-6, 10 warm-up epochs then
cosine, temperature 0.1, 2-layer head (2048-128), colour strength 1.0, blur
p=0.5, 100 epochs. The paper reports 66.6% linear top-1 at 100 epochs and 69.3%
at 1000 (TPU v3); not reproduced here.

The 224 px variants run colour jitter, grayscale, blur and solarize on the
accelerator (``augment.on_device``); ``cifar10`` / ``cpu`` keep them in tf.data.

Variants ``cifar10``, ``cifar10_r50`` and ``cpu`` are simclr_v2.py's with v1's
2-layer head:

    python -m cvrl_jax.main --config=configs/simclr_v1.py:cpu \
        --config.data_dir=../shared/tfds --workdir=/tmp/simclr_v1_cpu
"""

import ml_collections

from configs import simclr_v2

VARIANTS = simclr_v2.VARIANTS


def get_config(variant: str = "imagenet") -> ml_collections.ConfigDict:
  c = simclr_v2.get_config(variant)
  c.head.num_layers = 2
  if variant == "imagenet":
    c.num_epochs = 100
    c.optimizer.update(base_lr=0.3, lr_scaling="linear", weight_decay=1e-6)
  return c
