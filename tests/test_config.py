"""The base config and its hook for methods, every preset, and ``upgrade`` of the
config.json of runs written before the keys moved (tests/old_configs: the
simclr_v2, moco_v2 and byol cpu runs of the code before, with the overrides of
their 20-step check)."""

import importlib
import json
import os

import pytest

from cvrl_jax import config as config_lib, methods

CONFIGS = ["barlow_twins", "byol", "cmc", "cpc", "dino", "instdisc", "moco_v1", "moco_v2",
           "moco_v3", "nnclr", "simclr_v1", "simclr_v2", "simsiam", "supcon", "swav", "vicreg"]
OLD = os.path.join(os.path.dirname(__file__), "old_configs")
# What the runs in tests/old_configs set on the command line.
OVERRIDES = dict(data_dir="../shared/tfds", log_every_steps=1, eval_every_steps=100_000,
                 checkpoint_every_steps=100_000)


def presets():
  for name in CONFIGS:
    module = importlib.import_module(f"configs.{name}")
    for variant in module.VARIANTS:
      yield name, variant, module.get_config(variant)


def as_json(c) -> dict:
  """What a run writes to config.json, read back (tuples as lists)."""
  return json.loads(c.to_json_best_effort())


def test_every_method_has_its_namespace_and_nothing_else():
  for name, cls in methods.available().items():
    c = config_lib.base_config(name)
    assert c.method == name and c.task == "pretrain"
    namespaces = {k for k in cls.defaults if k not in ("head", "predictor")}
    assert namespaces <= {name}, (name, namespaces)
    others = set(methods.available()) - {name}
    assert not others & set(c), (name, others & set(c))


@pytest.mark.parametrize("name,variant,c", list(presets()),
                         ids=[f"{n}:{v}" for n, v, _ in presets()])
def test_preset_is_current_and_upgrade_leaves_it_alone(name, variant, c):
  # Nothing a preset sets is a key the base config does not declare.
  base = config_lib.base_config(c.method)
  undeclared = {k for k in c if k not in base}
  assert not undeclared, undeclared
  for section, value in c.items():
    if hasattr(value, "keys"):
      assert set(value) <= set(base[section]), (section, set(value) - set(base[section]))
  assert as_json(config_lib.upgrade(as_json(c))) == as_json(c)


def test_unknown_variant_names_the_choices():
  with pytest.raises(ValueError, match="'x': use imagenet, cifar10, cifar10_r50 or cpu."):
    config_lib.check_variant("x", ("imagenet", "cifar10", "cifar10_r50", "cpu"))
  with pytest.raises(ValueError, match="'x': use imagenet or cpu."):
    config_lib.check_variant("x", ("imagenet", "cpu"))


@pytest.mark.parametrize("name", ["simclr_v2", "moco_v2", "byol"])
def test_old_run_upgrades_to_todays_preset(name):
  with open(os.path.join(OLD, f"{name}.json")) as f:
    old = json.load(f)
  assert "task" not in old
  today = importlib.import_module(f"configs.{name}").get_config("cpu")
  today.update(OVERRIDES)
  today.knn.eval_at_start = False
  if name == "simclr_v2":  # the old run predates the preset's short-schedule levers
    today.simclr.temperature, today.augment.crop_area = 0.5, (0.08, 1.0)
  upgraded = config_lib.upgrade(old)
  assert as_json(upgraded) == as_json(today)
  assert as_json(config_lib.upgrade(as_json(upgraded))) == as_json(upgraded)
  if name == "simclr_v2":
    assert "temperature" not in upgraded and upgraded.simclr.temperature == 0.5


def test_moved_keys_are_moved():
  v3 = as_json(importlib.import_module("configs.moco_v3").get_config("cpu"))
  old = {k: v for k, v in v3.items() if k not in ("task", "moco_v3")}
  old["moco"] = v3["moco_v3"]
  assert as_json(config_lib.upgrade(old)) == v3
  supcon = as_json(importlib.import_module("configs.supcon").get_config("cpu"))
  old = {k: v for k, v in supcon.items() if k not in ("task", "supcon")}
  old["temperature"] = 0.3
  assert config_lib.upgrade(old).supcon.temperature == 0.3


def test_evaluation_config_is_left_alone():
  saved = {"task": "linear_eval", "pretrained": "/tmp/x", "augment": "none"}
  assert config_lib.upgrade(saved).to_dict() == saved
