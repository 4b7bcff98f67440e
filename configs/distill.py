r"""Distillation / self-training (SimCLR v2 step 3): a fine-tuned teacher labels the
unlabelled images, a student learns from its soft labels.

    python -m cvrl_jax.main --config=configs/distill.py \
        --config.teacher=FINETUNE_WORKDIR --workdir=/tmp/distill

The teacher is the workdir of a ``configs/finetune.py`` run (latest checkpoint,
or ``teacher_step``). The student (the teacher's encoder, or a smaller one:
``--config.student.depth=18 --config.student.width_multiplier=0.5``, plus a linear
classifier) trains from scratch on every training image with
``-sum_y p_T(y|x; tau) log p_S(y|x; tau)``; ``distill.alpha < 1`` adds
``(1 - alpha)`` times the cross-entropy on the labelled fraction
(``label_fraction``, drawn as in fine-tuning). The dataset defaults to the
teacher's. Optimiser, batch and schedule as SimCLR v2's pre-training (LARS, lr
0.1 x sqrt(B), weight decay 1e-4, 10 warm-up epochs, cosine, batch 4096, 400
epochs); random crop + flip; tau 0.1 for self-distillation (the paper uses 1.0
when the student is smaller).

Variants: ``imagenet`` (default), ``cpu`` (CIFAR-10 on a 2-core CPU; teacher:
the ``finetune.py:cpu_10pct`` run):

    python -m cvrl_jax.main --config=configs/distill.py:cpu \
        --config.teacher=/tmp/ft10_cpu --config.data_dir=../shared/tfds \
        --workdir=/tmp/distill_cpu

Measured 2026-11-23 on the 2-core CPU (8 simulated devices): teacher the
``finetune.py:cpu_10pct`` run (42.67% top-1), student a ResNet-18 x0.25 from
scratch on all 50k unlabelled training images for 400 steps: top-1 40.18%,
top-5 88.61% on the 10,000 test images (68% agreement with the teacher on the
training batches), 3.8 min. For scale: the student never saw a label, and
fine-tuning a random encoder on the 5,000 labels reaches 38.05%.
"""

import ml_collections

from cvrl_jax.evaluation import config as eval_config


def get_config(variant: str = "imagenet") -> ml_collections.ConfigDict:
  if variant not in ("imagenet", "cpu"):
    raise ValueError(f"Unknown variant {variant!r}: use imagenet or cpu.")
  c = eval_config.eval_config("distill")
  del c.pretrained, c.pretrained_step, c.representation_layer
  c.teacher = ""              # a finetune.py workdir
  c.teacher_step = -1         # -1: its latest checkpoint
  c.student = ml_collections.ConfigDict(dict(depth=0, width_multiplier=0.0))  # 0: teacher's
  c.distill = ml_collections.ConfigDict(dict(temperature=0.1, alpha=1.0))
  c.optimizer.update(name="lars", base_lr=0.1, lr_scaling="sqrt", weight_decay=1e-4,
                     warmup_epochs=10.0, schedule="cosine")
  c.batch_size, c.num_epochs = 4096, 400.0
  if variant == "cpu":
    # LARS 1.0 x B/256 (0.5; the zero-initialised classifier takes plain momentum
    # steps at that rate), 10% warm-up, tau 1.0; 400 steps, about one epoch of
    # CIFAR-10's 50k images. The cpu pre-training's rate (4.0) with tau 0.1 diverged
    # (NaN by step 50): the classifier's steps and the 1/tau-scaled gradients are
    # both large.
    c.distill.temperature = 1.0
    c.optimizer.update(base_lr=1.0, lr_scaling="linear")
    c.batch_size, c.total_steps = 128, 400
    c.optimizer.warmup_epochs = 0.1 * 400 / (50_000 // 128)
    c.eval_batch_size = 512
    c.log_every_steps = 25
  return c
