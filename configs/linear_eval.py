r"""Linear evaluation: a linear classifier on a frozen pre-trained encoder.

    python -m cvrl_jax.main --config=configs/linear_eval.py \
        --config.pretrained=PRETRAIN_WORKDIR --workdir=/tmp/linear

Any pre-training workdir (any method) works: the encoder is rebuilt from its
config.json and restored from its latest checkpoint (``pretrained_step=N`` for
another; ``pretrained_step=0`` for the same encoder as initialised, the
randomly initialised baseline). Top-1 / top-5 over the whole eval split go to
``WORKDIR/metrics.jsonl`` (``eval_top1``, ``eval_top5``) and ``summary.txt``.

Variants (``--config=configs/linear_eval.py:NAME``):

* ``simclr`` (default): SimCLR's protocol: SGD with Nesterov momentum 0.9, batch
  4096, lr 0.1 x B/256 (1.6), cosine decay, no warm-up, no weight decay, 90
  epochs, random crop + flip, zero-initialised classifier, encoder in inference
  mode (its BatchNorm statistics are not updated).
* ``moco``: MoCo's: SGD momentum 0.9, batch 256, lr 30, x0.1 at epochs 60 and
  80 of 100, no weight decay, crop + flip.
* ``cpu``: the SimCLR protocol without augmentation, so each image's
  representation is computed once and the classifier trains on cached features
  (90 epochs of the 50k CIFAR-10 training images in seconds):

      python -m cvrl_jax.main --config=configs/linear_eval.py:cpu \
          --config.pretrained=/tmp/simclr_cpu --config.data_dir=../shared/tfds \
          --workdir=/tmp/linear_cpu

  Measured 2026-11-23 on the 2-core CPU (8 simulated devices), from the
  ``simclr_v2.py:cpu`` run (700 steps, kNN 38.7%): top-1 44.63% / top-5 89.20%
  on the 10,000 CIFAR-10 test images; the same protocol on its randomly
  initialised encoder (``--config.pretrained_step=0``): 25.80% / 77.32%. 1.3 min
  each, of which about a minute caches the 60k images' features. The recipe's
  rate is high for these unnormalised features (loss peaks near 70 early on,
  then settles at 2.8 by the end).

  Transfer to another dataset: set ``dataset`` (and ``data_dir``). Measured on
  scikit-learn's real 8x8 handwritten digits, upsampled to 32 px and written as
  an image folder (``python -m cvrl_jax.tools.digits_folder
  --out=/tmp/digits``; 1,442 train / 355 test images), batch 512 (the split
  has fewer than 4096 images):

      python -m cvrl_jax.main --config=configs/linear_eval.py:cpu \
          --config.pretrained=/tmp/simclr_cpu --config.dataset=image_folder \
          --config.data_dir=/tmp/digits --config.batch_size=512 --workdir=/tmp/tr_lin

  top-1 80.85% (random-init encoder: 18.31%), 0.4 min.

Options: ``representation_layer=1`` evaluates the SimCLR v2 head's first layer;
``dataset`` (+ ``data_dir``, splits) another dataset than pre-training's (transfer);
``label_fraction`` a class-balanced fraction of the labels.
"""

import ml_collections

from cvrl_jax.evaluation import config as eval_config


def get_config(variant: str = "simclr") -> ml_collections.ConfigDict:
  c = eval_config.eval_config("linear_eval")
  if variant in ("simclr", "cpu"):
    c.optimizer.update(name="sgd", base_lr=0.1, lr_scaling="linear", nesterov=True,
                       schedule="cosine")
    c.batch_size, c.num_epochs = 4096, 90.0
  elif variant == "moco":
    c.optimizer.update(name="sgd", base_lr=30.0, lr_scaling="none", nesterov=False,
                       schedule="step", step_boundaries=(0.6, 0.8))
    c.batch_size, c.num_epochs = 256, 100.0
  else:
    raise ValueError(f"Unknown variant {variant!r}: use simclr, moco or cpu.")
  if variant == "cpu":
    c.train_augment = "none"
    c.eval_batch_size = 512
    c.log_every_steps = 100
  return c
