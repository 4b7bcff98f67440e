"""launch/colab_tpu.ipynb runs unchanged on the CPU (its `ci` preset, the shared CIFAR-10)."""

import json
import os

import pytest

from conftest import SHARED_TFDS

nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
nbformat = pytest.importorskip("nbformat")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "launch", "colab_tpu.ipynb")


def test_notebook_trains_plots_and_probes_on_the_cpu(tmp_path, monkeypatch, optimized_xla):
  # The kernel inherits this environment: the notebook's own settings mechanism.
  monkeypatch.setenv("CVRL_NOTEBOOK_PRESET", "ci")
  monkeypatch.setenv("CVRL_DATA_DIR", SHARED_TFDS)
  monkeypatch.setenv("CVRL_WORKDIR", str(tmp_path / "run"))
  monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows figures
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}}).execute()

  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "preset ci, 8 x cpu" in text
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # views, curves
  assert "linear probe: 2048 train / 512 test images, test top-1" in text
  top1 = float(text.split("test top-1 ")[1].split("%")[0])
  assert top1 > 20.0  # chance is 10%

  with open(tmp_path / "run" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows if "knn_top1" in r] == [0, 15, 30]
  assert max(r["step"] for r in rows if "loss" in r) == 30
