r"""VICReg (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance
Regularization for Self-Supervised Learning").

    python -m cvrl_jax.main --config=configs/vicreg.py --workdir=/tmp/vicreg

ImageNet (default): ResNet-50, 224 px, batch 2048, LARS lr 0.2 x B/256 (biases
and BN parameters excluded from decay and trust ratio, as the reference code),
weight decay 1e-6, 10 warm-up epochs then cosine (the reference code decays to
0.001 x the peak rate, here to 0), 1000 epochs; projector 8192-8192-8192 (BN
and ReLU on the hidden layers, a linear output); invariance, variance and
covariance coefficients 25 / 25 / 1; BYOL's asymmetric augmentations (blur
p=1.0 / 0.1, solarize p=0.0 / 0.2). That is Barlow Twins' recipe
(configs/barlow_twins.py) with VICReg's weight decay. The paper reports 73.2%
linear top-1; not reproduced here.

The 224 px variant runs colour jitter, grayscale, blur and solarize on the
accelerator (``augment.on_device``); ``cifar10`` / ``cpu`` keep them in tf.data.

Variants (``--config=configs/vicreg.py:NAME``), Barlow Twins' likewise:

* ``cifar10``: ResNet-18 with the CIFAR stem, 32 px, batch 512, LARS lr 0.3 x
  B/256, weight decay 1e-4, projector 2048-2048-2048, no blur, 1000 epochs (no
  published reference run of this exact recipe).

      python -m cvrl_jax.main --config=configs/vicreg.py:cifar10 \
          --config.data_dir=../shared/tfds --workdir=/tmp/vicreg_cifar10

* ``cpu``: the ``cifar10`` recipe shrunk to a 2-core laptop CPU: ResNet-18 x0.25,
  batch 128, 500 steps (1.3 epochs), LARS lr 4.0 x B/256 (the cpu rate of SimCLR,
  MoCo v3 and Barlow Twins, not tuned for VICReg), projector 1024-1024-1024:

      python -m cvrl_jax.main --config=configs/vicreg.py:cpu \
          --config.data_dir=../shared/tfds --workdir=/tmp/vicreg_cpu

  Measured 2026-12-02 on the 2-core CPU (8 simulated devices, nothing else
  running): kNN top-1 (10k train bank, 2k test queries) 26.85% at step 0
  (random init) -> 37.1% at step 250 -> 39.95% at step 500, 8.3 min of
  training at about 1 step/s: the highest end of the 500-step table in the
  README.
"""

import ml_collections

from configs import barlow_twins
from cvrl_jax import config as config_lib

VARIANTS = barlow_twins.VARIANTS


def get_config(variant: str = "imagenet") -> ml_collections.ConfigDict:
  # Coefficients 25 / 25 / 1; a projector without last BN.
  c = barlow_twins.recipe(config_lib.base_config("vicreg"), variant)
  if variant == "imagenet":
    c.optimizer.weight_decay = 1e-6  # Barlow Twins': 1.5e-6
  return c
