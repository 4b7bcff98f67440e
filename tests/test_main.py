"""The command line: config overrides, variants and refusals."""

import os

import pytest
from helpers import run_main


@pytest.mark.parametrize("override, message", [
    ("--config.batchsize=256", 'unknown key \'batchsize\'\nDid you mean "batch_size"'),
    ("--config.model.dept=18", "unknown key 'dept'"),
    ("--config.batch_size=many", "--config.batch_size=many: invalid literal"),
])
def test_bad_override_is_refused_in_one_clear_message(tmp_path, override, message):
  r = run_main("--config=configs/simclr_v2.py:cpu", f"--workdir={tmp_path}", override)
  assert r.returncode != 0
  assert message in r.stderr
  assert "Traceback" not in r.stderr
  assert not os.listdir(tmp_path)  # nothing was started or written


def test_unknown_variant_names_the_choices(tmp_path):
  r = run_main("--config=configs/simclr_v2.py:cifar100", f"--workdir={tmp_path}")
  assert r.returncode != 0 and "use imagenet, cifar10, cifar10_r50 or cpu" in r.stderr
