r"""Semi-supervised fine-tuning of a pre-trained encoder on a labelled fraction.

    python -m cvrl_jax.main --config=configs/finetune.py:imagenet_1pct \
        --config.pretrained=PRETRAIN_WORKDIR --workdir=/tmp/ft1

SimCLR v2's recipe: fine-tune everything from the projection head's first layer
(``representation_layer=1``; 0 for methods without a 3-layer head), LARS, lr
0.005 x B/256 (0.16 at batch 1024), no weight decay, no warm-up, cosine decay,
global BatchNorm, random crop + flip, a zero-initialised classifier; 60 epochs
on 1% of the labels, 30 on 10%. ``pretrained_step=0`` runs the same recipe on
the randomly initialised encoder (the baseline).

The labelled set: ImageNet's standard subsets are TFDS datasets
(``imagenet2012_subset/1pct`` / ``10pct``); for any other dataset
``label_fraction`` draws the same number of images from every class with the
fixed ``label_seed``: the same images every run, listed in
``WORKDIR/labelled_examples.csv`` (a 1% draw is a subset of the 10% one).

Variants (``--config=configs/finetune.py:NAME``): ``imagenet_1pct``,
``imagenet_10pct``, ``1pct`` / ``10pct`` (a fraction of the pre-training
dataset), ``cpu_1pct`` / ``cpu_10pct`` (CIFAR-10 on a 2-core CPU):

    python -m cvrl_jax.main --config=configs/finetune.py:cpu_10pct \
        --config.pretrained=/tmp/simclr_cpu --config.data_dir=../shared/tfds \
        --workdir=/tmp/ft10_cpu

Measured 2026-11-23 on the 2-core CPU (8 simulated devices) from the
``simclr_v2.py:cpu`` run (700 steps), top-1 / top-5 on the 10,000 CIFAR-10 test
images, against the same recipe on its randomly initialised encoder
(``--config.pretrained_step=0``):

* ``cpu_10pct`` (5,000 labelled images, 8 epochs, 312 steps, 2.5 min):
  42.67% / 89.66%; random init 38.05% / 88.64%.
* ``cpu_1pct`` (500 labelled images, 60 epochs, 180 steps, 2.0 min):
  32.70% / 84.64%; random init 30.29% / 82.51%.

Transfer (fine-tuning on all 1,442 training images of the digits image folder,
see configs/linear_eval.py; 30 epochs, 330 steps, 2.7 min):

    python -m cvrl_jax.main --config=configs/finetune.py:cpu_10pct \
        --config.pretrained=/tmp/simclr_cpu --config.dataset=image_folder \
        --config.data_dir=/tmp/digits --config.label_fraction=1.0 \
        --config.num_epochs=30 --workdir=/tmp/tr_ft

top-1 92.11%; random init 92.68%: with every label of an easy dataset, fine-tuning
erases the pre-training's advantage (the linear probe keeps it: 80.85% vs 18.31%).
"""

import ml_collections

from cvrl_jax.evaluation import config as eval_config

VARIANTS = ("imagenet_1pct", "imagenet_10pct", "1pct", "10pct", "cpu_1pct", "cpu_10pct")


def get_config(variant: str = "imagenet_1pct") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}: use {', '.join(VARIANTS)}.")
  c = eval_config.eval_config("finetune")
  c.representation_layer = 1
  c.batch_size = 1024
  c.optimizer.update(name="lars", base_lr=0.005, lr_scaling="linear", weight_decay=0.0,
                     warmup_epochs=0.0, schedule="cosine")
  one = variant.endswith("1pct")
  c.num_epochs = 60.0 if one else 30.0
  if variant.startswith("imagenet"):
    c.dataset = "imagenet2012_subset/1pct" if one else "imagenet2012_subset/10pct"
    c.eval_split = "validation"
    return c
  c.label_fraction = 0.01 if one else 0.1
  if variant.startswith("cpu"):
    c.batch_size = 128
    c.eval_batch_size = 512
    c.log_every_steps = 25
    c.num_epochs = 60.0 if one else 8.0  # 180 / 312 steps
    # A few hundred steps instead of the recipe's thousands at batch 1024: the
    # recipe's 0.005 x B/256 (0.0025 here) barely moves the classifier in that
    # time, so the CPU presets take 200x it (0.5 at batch 128).
    c.optimizer.base_lr = 1.0
  return c
