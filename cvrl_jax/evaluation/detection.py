"""Detection transfer: a Faster R-CNN fine-tuned from a pre-trained encoder.

The MoCo paper's protocol (its section 4.2, run there with detectron2): a Faster
R-CNN whose backbone starts from the pre-trained ResNet (or from the same run's
random initialisation, ``pretrained_step=0``), fine-tuned end to end on a
detection set, box AP on the held-out split. Here the detector is torchvision's
(``torchvision.models.detection.FasterRCNN`` with its FPN), the backbone the
encoder's PyTorch port (``tools.export.torchvision_resnet``, any width), and the AP
pycocotools' (``COCOeval``: AP@[.5:.95], AP@0.5 and AP@0.75, COCO's 101-point
definitions). Choices, as the anchors' small-batch recipes:

* BatchNorm is fine-tuned with batch statistics (the MoCo recipe's SyncBN, per
  batch here), not frozen: frozen statistics of a random initialisation would not
  normalise anything, and the baseline must be trainable.
* The input is the encoder's: RGB in [0, 1], no mean/std normalisation.
* Training: SGD with momentum, linear warm-up, steps down by 10x at fractions of
  the schedule, horizontal flips, shorter side drawn from ``min_size``.
* Boxes marked ``difficult`` (Pascal VOC) are trained on, COCO's ``iscrowd``
  regions are not (as detectron2); at evaluation both are regions a detection may
  hit without counting (pycocotools' ``iscrowd``), as VOC's own protocol ignores
  difficult boxes.

Data: a Pascal VOC folder (``JPEGImages/`` or ``images/``, ``Annotations/`` or
``annotations/`` of XML files; splits from ``ImageSets/Main/<split>.txt`` or, as
in ``../shared/raccoon``, ``<split>_labels.csv``) or a COCO folder
(``annotations/instances_<split>.json``, images in ``<split>/``). The run writes
``metrics.jsonl`` (``loss`` while training; ``box_ap``, ``box_ap50``, ``box_ap75`` at
the end),
``summary.txt`` and ``detector.pt`` (the fine-tuned state dict) to its workdir.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import random
import time
import xml.etree.ElementTree as ET
from typing import Any, Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from cvrl_jax import checkpoint, loop, parallel
from cvrl_jax.evaluation import pretrained as pretrained_lib
from cvrl_jax.models.resnet import STAGE_SIZES, stage_widths
from cvrl_jax.tools import export


@dataclasses.dataclass
class Example:
  """One image and its boxes (x1, y1, x2, y2 in pixels, 0-based, as torchvision)."""
  path: str
  width: int
  height: int
  boxes: np.ndarray      # [N, 4] float32
  labels: np.ndarray     # [N] int64, 1-based (0 is the background)
  ignore: np.ndarray     # [N] bool: VOC "difficult" / COCO "iscrowd"


@dataclasses.dataclass
class DetectionSet:
  examples: list[Example]
  classes: list[str]
  # VOC's "difficult" boxes are trained on (detectron2 does), COCO's crowd boxes
  # are not; both are ignored at evaluation.
  train_on_ignored: bool = True


def _first_dir(root: str, names: Sequence[str]) -> str:
  for name in names:
    if os.path.isdir(os.path.join(root, name)):
      return os.path.join(root, name)
  raise FileNotFoundError(f"{root} has none of the folders {list(names)}: give "
                          "--config.data_dir a Pascal VOC folder (JPEGImages/ or images/, "
                          "Annotations/ or annotations/) or a COCO folder.")


def voc_split_ids(root: str, split: str) -> list[str]:
  """Image ids (file names without extension) of a VOC folder's ``split``."""
  listing = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
  if os.path.exists(listing):
    with open(listing) as f:
      return [line.split()[0] for line in f if line.strip()]
  table = os.path.join(root, f"{split}_labels.csv")
  if os.path.exists(table):
    with open(table) as f:
      names = [row["filename"] for row in csv.DictReader(f)]
    return list(dict.fromkeys(os.path.splitext(n)[0] for n in names))  # ordered, unique
  raise FileNotFoundError(f"No split {split!r} in {root}: expected ImageSets/Main/{split}.txt "
                          f"or {split}_labels.csv (set --config.train_split / eval_split).")


def read_voc_xml(path: str) -> tuple[int, int, list[tuple[str, list[float], bool]]]:
  """(width, height, [(class, [x1, y1, x2, y2], difficult)]) of a VOC annotation,
  with VOC's 1-based inclusive pixel corners moved to 0-based edges."""
  root = ET.parse(path).getroot()
  size = root.find("size")
  width, height = int(size.find("width").text), int(size.find("height").text)
  objects = []
  for obj in root.iter("object"):
    box = obj.find("bndbox")
    x1, y1, x2, y2 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
    difficult = obj.find("difficult")
    objects.append((obj.find("name").text.strip(), [x1 - 1, y1 - 1, x2, y2],
                    difficult is not None and difficult.text.strip() == "1"))
  return width, height, objects


def read_voc(root: str, split: str, classes: Optional[list[str]] = None) -> DetectionSet:
  """A VOC folder's split; ``classes`` default to the split's own names, sorted."""
  images = _first_dir(root, ("JPEGImages", "images"))
  annotations = _first_dir(root, ("Annotations", "annotations"))
  parsed = []
  for image_id in voc_split_ids(root, split):
    width, height, objects = read_voc_xml(os.path.join(annotations, f"{image_id}.xml"))
    parsed.append((os.path.join(images, f"{image_id}.jpg"), width, height, objects))
  classes = classes or sorted({name for *_, objects in parsed for name, _, _ in objects})
  index = {name: i + 1 for i, name in enumerate(classes)}
  examples = []
  for path, width, height, objects in parsed:
    objects = [o for o in objects if o[0] in index]
    examples.append(Example(
        path, width, height, np.array([o[1] for o in objects], np.float32).reshape(-1, 4),
        np.array([index[o[0]] for o in objects], np.int64),
        np.array([o[2] for o in objects], bool)))
  return DetectionSet(examples, classes)


def read_coco(root: str, split: str) -> DetectionSet:
  """A COCO folder's split (``annotations/instances_<split>.json``, ``<split>/``)."""
  with open(os.path.join(root, "annotations", f"instances_{split}.json")) as f:
    data = json.load(f)
  categories = sorted(data["categories"], key=lambda c: c["id"])
  index = {c["id"]: i + 1 for i, c in enumerate(categories)}
  by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
  for ann in data["annotations"]:
    by_image[ann["image_id"]].append(ann)
  examples = []
  for img in sorted(data["images"], key=lambda i: i["id"]):
    anns = by_image[img["id"]]
    boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                       a["bbox"][1] + a["bbox"][3]] for a in anns], np.float32).reshape(-1, 4)
    examples.append(Example(
        os.path.join(root, split, img["file_name"]), img["width"], img["height"], boxes,
        np.array([index[a["category_id"]] for a in anns], np.int64),
        np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)))
  return DetectionSet(examples, [c["name"] for c in categories], train_on_ignored=False)


def read_split(root: str, split: str, classes: Optional[list[str]] = None) -> DetectionSet:
  """The split of a VOC or COCO folder (COCO when ``annotations/instances_<split>.json``
  exists)."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--config.data_dir={root!r} is not a folder: give a Pascal VOC "
                            "or COCO detection folder, e.g. ../shared/raccoon.")
  if os.path.exists(os.path.join(root, "annotations", f"instances_{split}.json")):
    return read_coco(root, split)
  return read_voc(root, split, classes)


def training_sets(config: ml_collections.ConfigDict) -> tuple[DetectionSet, DetectionSet]:
  """(train, eval): ``data_dir``'s splits, plus ``extra_train`` ("DIR:SPLIT", ...)
  in the training set (VOC07+12: VOC2012's trainval with VOC2007's)."""
  train = read_split(config.data_dir, config.train_split)
  for extra in config.extra_train:
    root, _, split = extra.rpartition(":")
    train.examples += read_split(root, split, train.classes).examples
  evaluation = read_split(config.data_dir, config.eval_split, train.classes)
  if evaluation.classes != train.classes:
    raise ValueError(f"The eval split's classes {evaluation.classes} are not the train "
                     f"split's {train.classes}.")
  return train, evaluation


def load_image(path: str):
  """``[3, H, W]`` float tensor in [0, 1], RGB (grayscale JPEGs too)."""
  import torch  # pylint: disable=import-outside-toplevel
  with Image.open(path) as img:
    array = np.asarray(img.convert("RGB"), np.float32) / 255.0
  return torch.from_numpy(array.transpose(2, 0, 1).copy())


def training_example(example: Example, rng: random.Random, train_on_ignored: bool = True):
  """(image, target) with a horizontal flip half of the time."""
  import torch  # pylint: disable=import-outside-toplevel
  image = load_image(example.path)
  keep = np.ones_like(example.ignore) if train_on_ignored else ~example.ignore
  boxes = torch.from_numpy(example.boxes[keep].copy())
  if rng.random() < 0.5:
    image = image.flip(-1)
    boxes = torch.stack([image.shape[-1] - boxes[:, 2], boxes[:, 1],
                         image.shape[-1] - boxes[:, 0], boxes[:, 3]], dim=1)
  return image, {"boxes": boxes, "labels": torch.from_numpy(example.labels[keep])}


def build_detector(pre_config: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                   num_classes: int, state_dict: Optional[dict] = None):
  """torchvision's Faster R-CNN + FPN on the pre-trained encoder's PyTorch port."""
  import torch  # pylint: disable=import-outside-toplevel
  export.import_torchvision()  # before torchvision's submodules, where its ops are missing
  from torchvision.models.detection import backbone_utils, faster_rcnn  # pylint: disable=import-outside-toplevel
  m = pre_config.model
  body = export.torchvision_resnet(m.depth, m.stem, m.width_multiplier)
  if state_dict is not None:
    body.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()},
                         strict=True)
  _, bottleneck = STAGE_SIZES[m.depth]
  channels = [w * (4 if bottleneck else 1) for w in stage_widths(m.width_multiplier)[1:]]
  backbone = backbone_utils.BackboneWithFPN(
      body, return_layers={f"layer{s}": str(s - 1) for s in (1, 2, 3, 4)},
      in_channels_list=channels, out_channels=config.fpn_channels)
  resolution = 7  # MultiScaleRoIAlign's output, torchvision's default
  head = faster_rcnn.TwoMLPHead(config.fpn_channels * resolution ** 2, config.box_head_dim)
  return faster_rcnn.FasterRCNN(
      backbone, num_classes=None, min_size=tuple(config.min_size), max_size=config.max_size,
      image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0], box_head=head,
      box_batch_size_per_image=config.rois_per_image,
      box_predictor=faster_rcnn.FastRCNNPredictor(config.box_head_dim, num_classes + 1))


def learning_rate(config: ml_collections.ConfigDict, step: int) -> float:
  """Linear warm-up, then ``base_lr`` divided by 10 at each of ``step_boundaries``
  (fractions of ``total_steps``), detectron2's schedule."""
  drops = sum(step >= b * config.total_steps for b in config.step_boundaries)
  warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
  return config.base_lr * warm * 0.1 ** drops


def coco_ground_truth(data: DetectionSet) -> dict:
  """The eval split as a COCO dataset dict (image ids = positions in the split)."""
  images, annotations = [], []
  for i, ex in enumerate(data.examples):
    images.append({"id": i, "width": ex.width, "height": ex.height})
    for box, label, ignore in zip(ex.boxes, ex.labels, ex.ignore):
      w, h = float(box[2] - box[0]), float(box[3] - box[1])
      annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                          "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h,
                          "iscrowd": int(ignore)})
  categories = [{"id": i + 1, "name": n} for i, n in enumerate(data.classes)]
  return {"images": images, "annotations": annotations, "categories": categories}


def box_ap(data: DetectionSet, detections: list[dict]) -> dict[str, float]:
  """COCO's box AP@[.5:.95], AP@0.5 and AP@0.75 (in %) of ``detections`` (per image of
  ``data``: ``boxes`` [N, 4] x1y1x2y2, ``scores``, ``labels`` as numpy)."""
  from pycocotools.coco import COCO  # pylint: disable=import-outside-toplevel
  from pycocotools.cocoeval import COCOeval  # pylint: disable=import-outside-toplevel
  results = [{"image_id": i, "category_id": int(c), "score": float(s),
              "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
             for i, d in enumerate(detections)
             for b, s, c in zip(d["boxes"], d["scores"], d["labels"])]
  if not results:
    return {"box_ap": 0.0, "box_ap50": 0.0, "box_ap75": 0.0}
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):  # pycocotools prints its progress and table
    gt = COCO()
    gt.dataset = coco_ground_truth(data)
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  logging.info("COCOeval:\n%s", printed.getvalue())
  ap, ap50, ap75 = (max(float(v), 0.0) * 100 for v in evaluator.stats[:3])  # -1: no boxes
  return {"box_ap": ap, "box_ap50": ap50, "box_ap75": ap75}


def detect(model, data: DetectionSet, batch_size: int) -> list[dict]:
  """The detector's boxes for every image of ``data``, in order."""
  import torch  # pylint: disable=import-outside-toplevel
  model.eval()
  out = []
  with torch.no_grad():
    for start in range(0, len(data.examples), batch_size):
      images = [load_image(ex.path) for ex in data.examples[start:start + batch_size]]
      for d in model(images):
        out.append({k: v.numpy() for k, v in d.items()})
  return out


def pretrained_backbone(config: ml_collections.ConfigDict) -> tuple[Any, dict, int]:
  """(pre-training config, torchvision state dict of its encoder, step), the
  encoder as the other evaluations load it (step 0: the run's initialisation)."""
  export.check_torchvision_compatible(checkpoint.read_config(config.pretrained).model)
  pre = pretrained_lib.load_pretrained(config.pretrained, config.pretrained_step,
                                       parallel.make_mesh(None))
  params, batch_stats = jax.device_get((pre.params, pre.batch_stats))
  flat = export.flatten(*export.encoder_variables(params, batch_stats))
  return pre.config, export.torchvision_state_dict(flat, pre.step), pre.step


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Fine-tunes the detector ``total_steps`` steps; box AP on ``eval_split``."""
  import torch  # pylint: disable=import-outside-toplevel
  if not config.pretrained:
    raise ValueError("Set --config.pretrained to a pre-training workdir (with "
                     "--config.pretrained_step=0 for its random initialisation).")
  train_set, eval_set = training_sets(config)
  pre_config, state_dict, step = pretrained_backbone(config)
  loop.make_workdir(workdir)
  checkpoint.write_config(workdir, config)
  torch.manual_seed(config.seed)
  rng = random.Random(config.seed)
  model = build_detector(pre_config, config, len(train_set.classes), state_dict)
  params = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.SGD(params, lr=config.base_lr, momentum=config.momentum,
                              weight_decay=config.weight_decay)
  writer = loop.create_writer(workdir)
  order: list[int] = []
  began = time.time()
  model.train()
  for s in range(config.total_steps):
    if len(order) < config.batch_size:
      order += rng.sample(range(len(train_set.examples)), len(train_set.examples))
    batch = [training_example(train_set.examples[i], rng, train_set.train_on_ignored)
             for i in order[:config.batch_size]]
    del order[:config.batch_size]
    for group in optimizer.param_groups:
      group["lr"] = learning_rate(config, s)
    losses = model([b[0] for b in batch], [b[1] for b in batch])
    loss = sum(losses.values())
    if not torch.isfinite(loss):
      raise FloatingPointError(f"Detection loss is {loss.item()} at step {s}: lower "
                               "--config.base_lr or lengthen --config.warmup_steps.")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if (s + 1) % config.log_every_steps == 0 or s + 1 == config.total_steps:
      writer.write_scalars(s + 1, {"loss": loss.item(), "learning_rate": learning_rate(config, s),
                                   **{k: v.item() for k, v in losses.items()}})
  train_seconds = time.time() - began
  torch.save(model.state_dict(), os.path.join(workdir, "detector.pt"))
  model.transform.min_size = (config.eval_min_size,)
  scores = box_ap(eval_set, detect(model, eval_set, config.eval_batch_size))
  writer.write_scalars(config.total_steps, {**scores, "train_seconds": train_seconds})
  writer.flush()
  init = "its random initialisation" if step == 0 else f"step {step}"
  loop.write_summary(workdir, (
      f"Detection transfer of {config.pretrained} ({init}, {pre_config.method}, "
      f"{export.describe_model(pre_config.model)}): Faster R-CNN FPN, {config.total_steps} "
      f"steps of {config.batch_size} on {config.data_dir}:{config.train_split}; box AP "
      f"{scores['box_ap']:.2f}, AP50 {scores['box_ap50']:.2f}, AP75 {scores['box_ap75']:.2f} on {config.eval_split} "
      f"({len(eval_set.examples)} images); {train_seconds / 60:.1f} min of training."))
  return scores
