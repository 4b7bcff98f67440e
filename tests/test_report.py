"""The report command: final values from metrics.jsonl, runs side by side."""

import json

import pytest

from cvrl_jax.tools import report


def write_run(path, rows, config=None):
  path.mkdir()
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  if config is not None:
    (path / "config.json").write_text(json.dumps(config))
  return str(path)


ROWS = [{"step": 0, "knn_top1": 26.85},
        {"step": 25, "uptime": 107.3},
        {"step": 25, "loss": 5.14, "probe_top1": 10.6},
        {"step": 50, "loss": 4.66, "probe_top1": 29.375},
        {"step": 50, "knn_top1": 38.7}]
CONFIG = {"method": "simclr", "dataset": "cifar10",
          "model": {"name": "resnet", "depth": 18, "width_multiplier": 0.25}}


def test_final_metrics_are_the_last_values_and_last_step():
  assert report.final_metrics(ROWS) == {"step": 50, "knn_top1": 38.7, "uptime": 107.3,
                                        "loss": 4.66, "probe_top1": 29.375}


def test_table_puts_runs_side_by_side(tmp_path):
  a = write_run(tmp_path / "a", ROWS, CONFIG)
  b = write_run(tmp_path / "b", [{"step": 80, "knn_top1": 31.3, "key_momentum": 0.99}])
  text = report.table({"a": report.load_run(a), "b": report.load_run(b)})
  lines = text.splitlines()
  assert lines[0].split() == ["metric", "a", "b"]
  assert lines[1].split() == ["method", "simclr", "-"]
  assert lines[2].split() == ["model", "R18", "x0.25", "-"]
  assert lines[4].split() == ["step", "50", "80"]
  assert lines[5].split() == ["knn_top1", "38.70", "31.30"]  # preferred metrics first
  assert "uptime" not in text  # progress-only metrics are hidden


def test_markdown_csv_and_chosen_metrics(tmp_path):
  runs = {"a": report.load_run(write_run(tmp_path / "a", ROWS))}
  md = report.table(runs, metrics=["loss", "uptime"], fmt="markdown").splitlines()
  assert md == ["| metric | a |", "| --- | --- |", "| step | 50 |", "| loss | 4.66 |",
                "| uptime | 107.30 |"]
  assert report.table(runs, metrics=["knn_top1"], fmt="csv") == "metric,a\nstep,50\nknn_top1,38.70"


def test_a_live_runs_half_written_last_line_is_skipped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
  assert report.load_run(str(path)) == {"step": 1, "loss": 2.0}
  path.write_text('{"step": 1, "lo\n{"step": 2, "loss": 2.0}\n')
  with pytest.raises(ValueError, match="metrics.jsonl:1 is not JSON"):
    report.read_jsonl(str(path))


def test_missing_metrics_names_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="metrics.jsonl does not exist"):
    report.load_run(str(tmp_path))
