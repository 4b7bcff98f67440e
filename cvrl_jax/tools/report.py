r"""The final metrics of one or more runs, side by side, as a table.

    python -m cvrl_jax.tools.report /tmp/simclr_cpu /tmp/moco_v3_cpu
    python -m cvrl_jax.tools.report /tmp/simclr_cpu --format=markdown --metrics=knn_top1,loss

Every run (pre-training or evaluation) appends ``{"step": s, name: value, ...}`` lines
to ``WORKDIR/metrics.jsonl``. A metric's final value is its last line; the table shows
that value, and ``step`` the last step logged. An argument may also name a
``.jsonl`` file. ``config.json`` beside it, when present, adds the method and model.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable, Optional, Sequence

# Shown first, in this order, when present: what a reader compares runs by.
PREFERRED = ("knn_top1", "linear_top1", "top1", "test_top1", "probe_top1", "loss",
             "probe_loss", "learning_rate", "images_per_sec")
# Logged for progress only: hidden unless asked for with --metrics.
HIDDEN = ("uptime", "steps_per_sec")
FORMATS = ("text", "markdown", "csv")


def metrics_path(path: str) -> str:
  """``path`` itself if it is a file, else ``path/metrics.jsonl``."""
  return path if os.path.isfile(path) else os.path.join(path, "metrics.jsonl")


def read_jsonl(path: str) -> list[dict]:
  """The rows of a metrics.jsonl; a partly written last line (a live run) is skipped."""
  rows = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        if f.readline():  # not the last line: the file is damaged, say where
          raise ValueError(f"{path}:{number} is not JSON: {line[:80]!r}") from None
  return rows


def final_metrics(rows: Iterable[dict]) -> dict[str, float]:
  """Last value of every metric, and ``step``: the last step any line logged."""
  final: dict[str, float] = {}
  for row in rows:
    step = row.get("step")
    final.update({k: v for k, v in row.items() if k != "step"})
    if step is not None:
      final["step"] = max(final.get("step", step), step)
  return final


def describe(workdir: str) -> dict[str, str]:
  """Method and model from ``config.json`` (empty if there is none)."""
  path = os.path.join(workdir if os.path.isdir(workdir) else os.path.dirname(workdir),
                      "config.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    config = json.load(f)
  # Pre-training runs name their method; evaluation runs their task (knn, linear, ...).
  out = {"method": str(config.get("method") or f"{config.get('task', '?')} eval")}
  model = config.get("model") or config.get("network", {}).get("model")
  if model:
    if model.get("name", "resnet") == "vit":
      out["model"] = f"ViT-{model.get('depth')}x{model.get('width')}"
    else:
      out["model"] = f"R{model.get('depth')} x{model.get('width_multiplier', 1):g}"
  if config.get("dataset"):
    out["dataset"] = str(config["dataset"])
  return out


def load_run(path: str) -> dict[str, object]:
  """One table column: description and final metrics of the run at ``path``."""
  metrics = metrics_path(path)
  if not os.path.exists(metrics):
    raise FileNotFoundError(
        f"{metrics} does not exist: pass a workdir that a cvrl_jax run wrote into "
        "(it appends metrics.jsonl as it goes), or a .jsonl file.")
  return {**describe(path), **final_metrics(read_jsonl(metrics))}


def _order(names: Iterable[str], wanted: Optional[Sequence[str]]) -> list[str]:
  names = set(names)
  if wanted:
    return list(wanted)
  first = [n for n in PREFERRED if n in names]
  rest = sorted(n for n in names - set(first) - set(HIDDEN) - {"step"})
  return first + rest


def _cell(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    if not math.isfinite(value):
      return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
      return f"{value:.3g}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
  return str(value)


def table(runs: dict[str, dict], metrics: Optional[Sequence[str]] = None,
          fmt: str = "text") -> str:
  """Rows = metrics (description and ``step`` first), columns = runs."""
  if fmt not in FORMATS:
    raise ValueError(f"format={fmt!r}: use one of {FORMATS}.")
  described = [k for k in ("method", "model", "dataset") if any(k in r for r in runs.values())]
  all_names = {k for r in runs.values() for k in r} - set(described)
  rows = described + ["step"] + [n for n in _order(all_names, metrics) if n != "step"]
  header = ["metric", *runs]
  body = [[name, *(_cell(r.get(name)) for r in runs.values())] for name in rows]
  if fmt == "csv":
    return "\n".join(",".join(row) for row in [header, *body])
  if fmt == "markdown":
    lines = [header, ["---"] * len(header), *body]
    return "\n".join("| " + " | ".join(row) + " |" for row in lines)
  widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
  fmt_row = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                  for i, (c, w) in enumerate(zip(row, widths))).rstrip()
  return "\n".join(fmt_row(row) for row in [header, *body])


def main(argv: list[str]) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  paths = argv[1:]
  if not paths:
    raise SystemExit("Usage: python -m cvrl_jax.tools.report WORKDIR [WORKDIR ...] "
                     "[--format=text|markdown|csv] [--metrics=a,b]")
  try:
    runs = {path.rstrip("/"): load_run(path) for path in paths}
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f"Report refused: {e}") from None
  f = flags.FLAGS
  print(table(runs, f.metrics, f.format))


def _define_flags() -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("format", "text", list(FORMATS), "Table format.")
  flags.DEFINE_list("metrics", None, "Metrics to show, in order (default: all but "
                    f"{', '.join(HIDDEN)}).")


if __name__ == "__main__":
  from absl import app  # pylint: disable=import-outside-toplevel
  _define_flags()
  app.run(main)
