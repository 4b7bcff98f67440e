r"""CPC v2 (Hénaff et al. 2019/2020, "Data-Efficient Image Recognition with
Contrastive Predictive Coding").

    python -m cvrl_jax.main --config=configs/cpc.py --workdir=/tmp/cpc

ImageNet (default): one 256 px crop of each image (30-100% of the area, flipped,
no colour ops), cut into a 7 x 7 grid of 64 px patches every 32 px; a ResNet-50
with LayerNorm in place of BatchNorm encodes each patch (the paper's best encoder is
a ResNet-161, which this library does not have; its ResNet-50 reaches 63.8%
linear top-1 in the paper's table); a masked context network of 5 residual blocks
of width 256; predictions 3, 4 and 5 rows below into 64-d targets (x 0.1), with
the patches of the whole global batch as candidates; per patch: flip p = 0.5,
colour dropping always, 4 px of spatial jitter (cvrl_jax/methods/cpc.py defines
each). Batch 512, Adam at 4e-4 (no scaling), 200 epochs with 1 warm-up epoch
then cosine: this library's choices, not values taken from the paper. Not
reproduced here.

Variants (``--config=configs/cpc.py:NAME``):

* ``cifar10``: CIFAR-10 at 32 px, 8 px patches every 4 px (7 x 7, the ImageNet
  grid's geometry), ResNet-18 with LayerNorm and the CIFAR stem, 1 px of jitter,
  batch 512, 200 epochs; not measured.

      python -m cvrl_jax.main --config=configs/cpc.py:cifar10 \
          --config.data_dir=../shared/tfds --workdir=/tmp/cpc_cifar10

* ``cpu``: the ``cifar10`` grid shrunk to a 2-core laptop CPU like the other
  ``cpu`` presets: ResNet-18 x0.25, batch 128 (6,272 patches a step), 500 steps,
  Adam at 1e-3 after ``use_cpu``'s warm-up, a context network of width 64 (at
  256 it would cost twice the encoder's FLOPs); colour dropping on half the patches
  (the paper drops on every patch; with 1.3 epochs, the encoder then sees
  full-colour patches too, as the kNN monitor shows it):

      python -m cvrl_jax.main --config=configs/cpc.py:cpu \
          --config.data_dir=../shared/tfds --workdir=/tmp/cpc_cpu

  Measured 2026-12-02 on the 2-core CPU (8 simulated devices): kNN top-1 (10k
  train bank, 2k test queries) 28.15% at step 0 (random init) -> 31.7% at step
  250 -> 31.5% at step 500, 17.8 min of training (0.4-0.5 steps/s, about half
  SimCLR's: the 7x7 grid is 6,272 patches a step). The loss fell from chance
  (3 ln 6272 = 26.23) to 25.37 and the online probe rose from 10% to 22% train
  top-1.
"""

import ml_collections

from cvrl_jax import config as config_lib

VARIANTS = ("imagenet", "cifar10", "cpu")


def get_config(variant: str = "imagenet") -> ml_collections.ConfigDict:
  config_lib.check_variant(variant, VARIANTS)
  # config.cpc: offsets (3, 4, 5), 64-d targets, emb_scale 0.1, 5 context blocks of
  # 256, flip 0.5, colour dropping 1.0, jitter 4 px.
  c = config_lib.base_config("cpc")
  c.update(num_views=1, image_size=256, batch_size=512, num_epochs=200)
  c.model.update(depth=50, norm="layer", patch_grid=(64, 32))
  c.optimizer.update(name="adamw", base_lr=4e-4, lr_scaling="none", weight_decay=0.0,
                     warmup_epochs=1.0, schedule="cosine")
  c.augment.update(crop_area=(0.3, 1.0), flip=True, color_p=0.0, grayscale_p=0.0,
                   blur_p=(0.0,), solarize_p=(0.0,), on_device=False)
  if variant == "imagenet":
    return c
  config_lib.use_cifar10(c)
  c.update(num_epochs=200)
  c.model.patch_grid = (8, 4)
  c.cpc.jitter = 1
  if variant == "cpu":
    config_lib.use_cpu(c, total_steps=500)
    c.optimizer.base_lr = 1e-3
    c.cpc.update(color_drop_p=0.5, context_width=64)  # a quarter, as the encoder's width
  return c
