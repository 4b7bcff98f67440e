"""The command line: config overrides, variants, refusals, the default workdir, a
missing dataset."""

import os
import subprocess
import sys

import pytest
from helpers import ROOT, run_main


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
  assert r.returncode != 0
  assert "use imagenet, cifar10, cifar10_r50, cpu, cpu_27min, mnist or imagenette" in r.stderr


def test_default_workdir_is_named_after_the_config_and_variant():
  # In a process of its own: main.py defines absl's --config flag on import, and so do
  # the benchmarks that other tests of the same pytest worker import.
  code = ("from cvrl_jax import main\n"
          "for arg in ('configs/simclr_v2.py', '/x/configs/moco_v2.py:mnist'):\n"
          "  print(main.default_workdir(arg))")
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                     text=True, check=True)
  assert r.stdout.split() == [os.path.join(ROOT, "runs", "simclr_v2"),
                              os.path.join(ROOT, "runs", "moco_v2_mnist")]


def test_the_bare_design_card_command_prints_its_workdir_and_how_to_prepare_imagenet(
    tmp_path):
  """``python -m cvrl_jax.main --config=configs/simclr_v2.py`` typed as it is, on a
  machine without ImageNet (an empty TFDS data dir)."""
  workdir = os.path.join(ROOT, "runs", "simclr_v2")
  existed = os.path.exists(workdir)
  r = run_main("--config=configs/simclr_v2.py", TFDS_DATA_DIR=str(tmp_path))
  assert r.returncode != 0 and "Traceback" not in r.stderr
  assert f"Workdir: {workdir} (the default for this config" in r.stderr
  assert f"Dataset 'imagenet2012' is not prepared in {tmp_path}" in r.stderr
  for step in ("ILSVRC2012_img_train.tar", "tfds build imagenet2012 --data_dir=DIR "
               "--manual_dir=MANUAL", "--config.data_dir=DIR"):
    assert step in r.stderr
  assert os.path.exists(workdir) == existed  # nothing written before the data is found
