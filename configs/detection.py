r"""Detection transfer (the MoCo paper's protocol): Faster R-CNN + FPN from an encoder.

    python -m cvrl_jax.main --config=configs/detection.py:raccoon \
        --config.pretrained=PRETRAIN_WORKDIR --config.data_dir=../shared/raccoon \
        --workdir=/tmp/detect_raccoon

fine-tunes torchvision's Faster R-CNN with an FPN on the encoder of a pre-training
run (``--config.pretrained_step=0``: the same run's random initialisation, the
baseline) and writes COCO box AP@[.5:.95] and AP@0.5 on the held-out split to
``metrics.jsonl`` and ``summary.txt`` (cvrl_jax/evaluation/detection.py). The
encoder must have a torchvision counterpart (a ResNet of any width; not SK, ViT,
CMC or CPC) and needs torch, torchvision and pycocotools (``pip install -e
'.[detection]'``, in ``.[test]`` too).

Variants:

* ``raccoon``: ``../shared/raccoon`` (160 train / 40 test photographs, one class)
  sized for a 2-core CPU: shorter side 320 px (max 512), batch 4, 400 steps
  (10 epochs), a 64-channel FPN, a 256-d box head trained on 128 proposals per
  image (one class, one or two boxes per image: 512 would be mostly background). The README has its figures
  for an Imagenette-pre-trained ResNet-18 against the random initialisation.
* ``voc``: Pascal VOC07+12 trainval -> VOC07 test, detectron2's schedule of the
  MoCo paper's VOC runs (24k steps of 16 images, lr 0.02 dropped 10x at 18k and
  22k, shorter side 480-800 px in training and 800 at test, max 1333)::

      python -m cvrl_jax.main --config=configs/detection.py:voc \
          --config.pretrained=/runs/moco_v2_imagenet \
          --config.data_dir=VOCdevkit/VOC2007 \
          --config.extra_train='("VOCdevkit/VOC2012:trainval",)' --workdir=/runs/det_voc

* ``coco``: COCO 2017 (``annotations/instances_train2017.json``, ``train2017/``),
  the 1x schedule (90k steps of 16, lr 0.02 dropped at 60k and 80k)::

      python -m cvrl_jax.main --config=configs/detection.py:coco \
          --config.pretrained=/runs/moco_v2_imagenet --config.data_dir=coco \
          --workdir=/runs/det_coco

  The paper's C4 backbone (detectron2's R50-C4) is not built here: torchvision's
  detection models take an FPN (or a plain last-stage) backbone.
"""

import ml_collections

from cvrl_jax import config as config_lib

VARIANTS = ("raccoon", "voc", "coco")


def get_config(variant: str = "raccoon") -> ml_collections.ConfigDict:
  config_lib.check_variant(variant, VARIANTS)
  c = ml_collections.ConfigDict(dict(
      task="detection",
      pretrained="",        # a pre-training workdir (config.json + checkpoints/)
      pretrained_step=-1,   # -1: latest; 0: its initialisation (random-init baseline)
      data_dir="",          # a Pascal VOC or COCO folder
      train_split="trainval", eval_split="test",
      extra_train=(),       # more training splits, "DIR:SPLIT" (VOC07+12)
      # Shorter side: drawn per batch from min_size in training, eval_min_size at
      # evaluation; the longer side at most max_size.
      min_size=(480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
      eval_min_size=800, max_size=1333,
      batch_size=16, eval_batch_size=8, total_steps=24_000,
      base_lr=0.02, momentum=0.9, weight_decay=1e-4, warmup_steps=100,
      step_boundaries=(0.75, 0.9167),  # lr / 10 at these fractions of total_steps
      fpn_channels=256, box_head_dim=1024,
      rois_per_image=512,   # proposals sampled per image to train the box head
      log_every_steps=20, seed=0))
  if variant == "raccoon":
    c.update(train_split="train", eval_split="test", min_size=(320,), eval_min_size=320,
             max_size=512, batch_size=4, eval_batch_size=4, total_steps=400, base_lr=0.02,
             warmup_steps=50, step_boundaries=(0.75,), fpn_channels=64, box_head_dim=256,
             rois_per_image=128, log_every_steps=20)
  elif variant == "coco":
    c.update(train_split="train2017", eval_split="val2017", total_steps=90_000,
             step_boundaries=(0.6667, 0.8889))
  return c
