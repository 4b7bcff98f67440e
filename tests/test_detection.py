"""Detection transfer: nms without torchvision's compiled ops, the VOC and COCO
readers on the real raccoon set, COCO AP against hand-worked values, the run."""

import json
import os
import random

import numpy as np
import pytest

from configs import detection as detection_config
from cvrl_jax.evaluation import detection
from cvrl_jax.tools import export
from helpers import fake_workdir, run_main

RACCOON = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                       "raccoon"))
torch = pytest.importorskip("torch", reason="pip install -e '.[test]' installs torch")
pytest.importorskip("pycocotools", reason="pip install -e '.[test]' installs pycocotools")


def slow_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
  """The definition, one box at a time."""
  def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union
  kept = []
  for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
    if all(iou(boxes[i], boxes[j]) <= threshold for j in kept):
      kept.append(i)
  return kept


def random_boxes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  corner = rng.uniform(0, 100, (n, 2))
  boxes = np.concatenate([corner, corner + rng.uniform(5, 40, (n, 2))], 1).astype(np.float32)
  return boxes, rng.permutation(n).astype(np.float32)  # distinct scores


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_greedy_nms_is_the_definition(threshold):
  boxes, scores = random_boxes(300, seed=int(threshold * 10))
  got = export.greedy_nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold)
  assert got.tolist() == slow_nms(boxes, scores, threshold)
  assert 10 < len(got) < 300  # some boxes kept, some suppressed


def test_hand_worked_nms_and_torchvision_ops_use_it():
  tv = export.import_torchvision()
  boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 5.]])
  scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
  # IoU(0, 1) = 90 / 110, IoU(0, 3) = 0.5, IoU(1, 3) = 45 / 105 = 0.43; in score
  # order 3, 0, 1, 2. At 0.6 box 1 goes (to 0); at 0.45 box 0 goes (to 3) and
  # then 1 stays; at 0.4 both go.
  assert tv.ops.nms(boxes, scores, 0.6).tolist() == [3, 0, 2]
  assert tv.ops.nms(boxes, scores, 0.45).tolist() == [3, 1, 2]
  assert tv.ops.nms(boxes, scores, 0.4).tolist() == [3, 2]
  # Per class: boxes of different classes never suppress each other.
  assert tv.ops.batched_nms(boxes, scores, torch.tensor([0, 1, 0, 0]), 0.4).tolist() == [3, 1, 2]


def test_raccoon_reads_as_a_voc_folder():
  train, test = detection.training_sets(_raccoon_config())
  assert (len(train.examples), len(test.examples)) == (160, 40)
  assert train.classes == test.classes == ["raccoon"]
  assert {os.path.basename(e.path) for e in train.examples}.isdisjoint(
      os.path.basename(e.path) for e in test.examples)
  by_name = {os.path.basename(e.path): e for e in train.examples}
  # raccoon-17.xml: 259x194, one box xmin 95, ymin 60, xmax 167, ymax 118 (1-based).
  e = by_name["raccoon-17.jpg"]
  assert (e.width, e.height) == (259, 194)
  np.testing.assert_array_equal(e.boxes, [[94, 59, 167, 118]])
  assert e.labels.tolist() == [1] and e.ignore.tolist() == [False]
  assert sum(len(e.boxes) for e in train.examples) > 160  # some images hold two raccoons


def _raccoon_config(**overrides):
  c = detection_config.get_config("raccoon")
  c.data_dir = RACCOON
  c.update(overrides)
  return c


def test_a_coco_folder_reads_as_the_same_boxes(tmp_path):
  _, test = detection.training_sets(_raccoon_config())
  gt = detection.coco_ground_truth(test)
  for img, ex in zip(gt["images"], test.examples):
    img["file_name"] = os.path.basename(ex.path)
  gt["annotations"][0]["iscrowd"] = 1  # a crowd region: ignored, and not trained on
  (tmp_path / "annotations").mkdir()
  (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(gt))
  os.symlink(os.path.join(RACCOON, "images"), tmp_path / "val")
  coco = detection.read_split(str(tmp_path), "val")
  assert coco.classes == ["raccoon"]
  for a, b in zip(coco.examples, test.examples):
    assert os.path.basename(a.path) == os.path.basename(b.path) and a.width == b.width
    np.testing.assert_allclose(a.boxes, b.boxes)
    assert a.labels.tolist() == b.labels.tolist()
  first = coco.examples[0]
  assert first.ignore[0] and not coco.train_on_ignored and test.train_on_ignored
  _, target = detection.training_example(first, random.Random(0), coco.train_on_ignored)
  assert len(target["boxes"]) == len(first.boxes) - 1 == len(target["labels"])
  _, target = detection.training_example(first, random.Random(0), True)
  assert len(target["boxes"]) == len(first.boxes)


def test_box_ap_against_hand_worked_values():
  ex = detection.Example("a.jpg", 100, 100, np.array([[10, 10, 60, 60]], np.float32),
                         np.array([1]), np.array([False]))
  data = detection.DetectionSet([ex], ["thing"])
  def ap(boxes, scores):
    return detection.box_ap(data, [{"boxes": np.array(boxes, np.float32),
                                     "scores": np.array(scores), "labels": np.ones(len(scores))}])
  assert ap([[10, 10, 60, 60]], [0.9]) == pytest.approx(
      {"box_ap": 100.0, "box_ap50": 100.0, "box_ap75": 100.0})
  # IoU 42*50 / 50*50 = 0.84: a hit at the thresholds 0.5, 0.55, ... 0.8, 7 of the 10.
  assert ap([[10, 10, 52, 60]], [0.9]) == pytest.approx(
      {"box_ap": 70.0, "box_ap50": 100.0, "box_ap75": 100.0})
  # IoU 31*50 / 50*50 = 0.62: a hit at 0.5, 0.55, 0.6 (3 of 10), a miss at 0.75.
  assert ap([[10, 10, 41, 60]], [0.9]) == pytest.approx(
      {"box_ap": 30.0, "box_ap50": 100.0, "box_ap75": 0.0})
  # A false positive scored above the hit: precision 1/2 at recall 1.
  assert ap([[70, 70, 90, 90], [10, 10, 60, 60]], [0.9, 0.8])["box_ap50"] == pytest.approx(
      50.0, abs=0.5)
  assert ap([], []) == {"box_ap": 0.0, "box_ap50": 0.0, "box_ap75": 0.0}


def test_learning_rate_warms_up_then_steps_down():
  c = _raccoon_config(total_steps=100, warmup_steps=10, base_lr=0.02, step_boundaries=(0.5, 0.8))
  lrs = [detection.learning_rate(c, s) for s in range(100)]
  assert lrs[0] == pytest.approx(0.002) and lrs[9] == pytest.approx(0.02)
  assert lrs[49] == pytest.approx(0.02) and lrs[50] == pytest.approx(0.002)
  assert lrs[80] == pytest.approx(0.0002)


def test_the_backbone_is_the_encoder(tmp_path):
  """The detector's ResNet computes the JAX encoder's features (width x0.125)."""
  workdir, method, state = fake_workdir(tmp_path, width=0.125)
  c = _raccoon_config(pretrained=workdir)
  pre_config, state_dict, step = detection.pretrained_backbone(c)
  assert step == 5 and pre_config.model.width_multiplier == 0.125
  model = detection.build_detector(pre_config, c, 1, state_dict)
  images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
  body = model.backbone.body.eval()
  with torch.no_grad():
    got = body(torch.from_numpy(images.transpose(0, 3, 1, 2)))["3"].mean(dim=(2, 3)).numpy()
  import jax  # pylint: disable=import-outside-toplevel
  want = np.asarray(method.features(jax.device_get(state.params),
                                    jax.device_get(state.batch_stats), images))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # Step 0: the run's initialisation, rebuilt from its config (no checkpoint at 0),
  # as the other evaluations' random-init baseline.
  _, init, step = detection.pretrained_backbone(_raccoon_config(pretrained=workdir,
                                                                pretrained_step=0))
  assert step == 0 and sorted(init) == sorted(state_dict)
  np.testing.assert_array_equal(init["layer4.1.bn2.running_var"], 1.0)
  detection.build_detector(pre_config, c, 1, init)  # loads strictly


def test_bad_input_is_refused_with_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a folder"):
    detection.training_sets(_raccoon_config(data_dir=str(tmp_path / "missing")))
  with pytest.raises(FileNotFoundError, match="JPEGImages/ or images/"):
    detection.training_sets(_raccoon_config(data_dir=str(tmp_path)))
  with pytest.raises(FileNotFoundError, match="val_labels.csv"):
    detection.training_sets(_raccoon_config(eval_split="val"))
  with pytest.raises(ValueError, match="--config.pretrained"):
    detection.train_and_evaluate(_raccoon_config(), str(tmp_path / "out"))


def test_the_readme_command_fine_tunes_and_reports_ap(tmp_path):
  workdir, _, _ = fake_workdir(tmp_path, width=0.125)
  out = tmp_path / "det"
  r = run_main("--config=configs/detection.py:raccoon", f"--config.pretrained={workdir}",
               f"--config.data_dir={RACCOON}", f"--workdir={out}", "--config.total_steps=2",
               "--config.batch_size=2", "--config.min_size=(96,)",
               "--config.eval_min_size=96", "--config.max_size=128")
  assert r.returncode == 0, r.stderr[-3000:]
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "loss" in r] == [2]
  final = rows[-1]
  assert 0 <= final["box_ap"] <= final["box_ap50"] <= 100 and final["train_seconds"] > 0
  assert final["box_ap75"] <= final["box_ap50"]
  assert "box AP" in (out / "summary.txt").read_text()
  assert (out / "detector.pt").exists() and (out / "config.json").exists()
