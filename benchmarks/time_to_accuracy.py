r"""Time to accuracy: kNN top-1 against training wall-clock time, as curves.

    python -m benchmarks.time_to_accuracy --data_dir=../shared/tfds --minutes=27 \
        --evals=3 --out=/tmp/tta --run=simclr=configs/simclr_v2.py:cpu_27min \
        --run=moco_v2=configs/moco_v2.py:cpu_27min --run=byol=configs/byol.py:cpu_27min

(docs/benchmarks.md has its curves of 2026-12-03 on a 2-core CPU: the SimCLR
``cpu_27min`` preset as it is, without ``--minutes``, 51.00% kNN at 22.2 minutes.)

Each ``--run=NAME=CONFIG`` is trained by ``python -m cvrl_jax.main`` as a user runs
it (its own process, in ``OUT/work/NAME``), with the kNN monitor set to the
standard protocol: the whole train split as the bank, the whole test split as
queries, k=200, T=0.1, cosine (``configs/knn_eval.py``'s default), at step 0 and
at ``--evals`` evenly spaced points. The clock is the loop's ``train_seconds``:
wall time since the process started (imports, data, compilation included),
evaluations excluded. ``--minutes`` (optional) sets ``total_steps`` so that the
schedule ends near that budget, from a short calibration run of the same config:
the same preset's speed differs between machines (and between days of one shared
machine) by up to 2x, so a budget in minutes, not a step count, is what a curve
compares. On 2026-12-03 the calibration read the speed 10-13% above what the
SimCLR and MoCo v2 runs then held, so their schedules ran 30-32 minutes of a
27-minute budget: the curve's minutes are measured, the budget only aimed at.
``benchmarks/gpu_speedrun.sh`` runs this on one GPU.

Writes ``OUT/time_to_accuracy.json`` (every curve, the commands, the machine)
and ``OUT/time_to_accuracy.png`` (kNN vs minutes, one line per run).
Arguments after ``--`` go to every run (e.g. ``-- --config.seed=1``).
"""

import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from typing import Optional, Sequence

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", None, "NAME=CONFIG_FILE[:VARIANT], one per curve.")
flags.DEFINE_string("data_dir", "", "TFDS data dir for every run (--config.data_dir).")
flags.DEFINE_string("out", None, "Folder for the JSON, the PNG and the runs' workdirs.")
flags.DEFINE_integer("evals", 6, "kNN evaluations after step 0, evenly spaced.")
flags.DEFINE_float("minutes", None, "Budget per run: total_steps from a calibration run.")
flags.DEFINE_integer("calibration_steps", 30, "Steps of the calibration run (--minutes).")

# configs/knn_eval.py's default variant: the protocol every figure here uses.
STANDARD_KNN = ("--config.knn.num_train_examples=0", "--config.knn.num_eval_examples=0",
                "--config.knn.k=200", "--config.knn.temperature=0.1")


def load_config(spec: str, extra: Sequence[str]):
  """The config ``--config=spec`` and the ``--config.*`` flags in ``extra`` give,
  built as ``cvrl_jax.main`` builds it."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=values, lock_config=True)
  values(["time_to_accuracy", f"--config={spec}",
          *[a for a in extra if a.startswith("--config.")]])
  return values.config


def command(spec: str, workdir: str, data_dir: str, extra: Sequence[str]) -> list[str]:
  return [sys.executable, "-m", "cvrl_jax.main", f"--config={spec}", f"--workdir={workdir}",
          *([f"--config.data_dir={data_dir}"] if data_dir else []), *extra]


def read_curve(workdir: str) -> list[dict]:
  """(step, train minutes, kNN top-1) of every evaluation a run logged."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [{"step": r["step"], "minutes": r["train_seconds"] / 60, "knn_top1": r["knn_top1"]}
          for r in rows if "knn_top1" in r and "train_seconds" in r]


def calibrate(spec: str, workdir: str, data_dir: str, minutes: float, steps: int,
              extra: Sequence[str]) -> int:
  """``total_steps`` that ends the schedule near ``minutes`` of wall time.

  Runs ``steps`` steps (no evaluation) and reads the loop's images/s and the time
  its first evaluation started (start-up + the steps); the budget left after
  start-up at that rate gives the steps.
  """
  config = load_config(spec, extra)
  subprocess.run(command(spec, workdir, data_dir, [
      *extra, f"--config.total_steps={steps}", "--config.knn.eval_at_start=false",
      "--config.knn.num_train_examples=512", "--config.knn.num_eval_examples=512",
      f"--config.log_every_steps={max(steps // 3, 1)}"]), check=True)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  rates = [r["images_per_sec"] for r in rows if "images_per_sec" in r][1:]  # past compile
  at_end = [r["train_seconds"] for r in rows if "train_seconds" in r][-1]
  per_step = config.batch_size / (sorted(rates)[len(rates) // 2])
  startup = max(at_end - steps * per_step, 0.0)
  return max(int((minutes * 60 - startup) / per_step), 1)


def machine() -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  return {"platform": platform.platform(), "processor": platform.processor(),
          "cpus": os.cpu_count(), "python": platform.python_version(),
          "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
          "date": datetime.date.today().isoformat()}


def plot(curves: dict[str, list[dict]], path: str, title: str) -> None:
  """kNN top-1 vs training minutes, one line per run."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
  for name, curve in curves.items():
    ax.plot([p["minutes"] for p in curve], [p["knn_top1"] for p in curve], "o-", label=name)
  ax.set_xlabel("training wall-clock time (min; start-up included, evaluations excluded)")
  ax.set_ylabel("kNN top-1 (%), k=200, whole train / test split")
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def run_one(name: str, spec: str, out: str, data_dir: str, evals: int,
            minutes: Optional[float], extra: Sequence[str]) -> dict:
  workdir = os.path.join(out, "work", name)
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    raise SystemExit(f"{workdir} already holds a run: pick a new --out, or remove it.")
  extra = list(extra)
  total_steps = load_config(spec, extra).total_steps
  if minutes:
    total_steps = calibrate(spec, workdir + "_calibration", data_dir, minutes,
                            FLAGS.calibration_steps, extra)
    extra.append(f"--config.total_steps={total_steps}")
  if not total_steps:
    raise SystemExit(f"{spec} sets no total_steps: give --minutes, or -- --config.total_steps=N.")
  every = max(math.ceil(total_steps / evals), 1)
  cmd = command(spec, workdir, data_dir, [*STANDARD_KNN, "--config.knn.eval_at_start=true",
                                          f"--config.eval_every_steps={every}", *extra])
  began = time.time()
  subprocess.run(cmd, check=True)
  return {"name": name, "config": spec, "total_steps": total_steps,
          "command": " ".join(cmd[1:]), "wall_minutes": (time.time() - began) / 60,
          "curve": read_curve(workdir)}


def main(argv: list[str]) -> None:
  extra = argv[1:]
  if not FLAGS.run or not FLAGS.out:
    raise app.UsageError("Give --out=DIR and at least one --run=NAME=CONFIG.")
  runs = [r.split("=", 1) for r in FLAGS.run]
  if any(len(r) != 2 for r in runs):
    raise app.UsageError("--run takes NAME=CONFIG, e.g. simclr=configs/simclr_v2.py:cpu.")
  os.makedirs(FLAGS.out, exist_ok=True)
  results = [run_one(name, spec, FLAGS.out, FLAGS.data_dir, FLAGS.evals, FLAGS.minutes, extra)
             for name, spec in runs]
  report = {"machine": machine(), "protocol": "kNN top-1, k=200, T=0.1, cosine, bank = "
            "whole train split, queries = whole test split", "runs": results}
  with open(os.path.join(FLAGS.out, "time_to_accuracy.json"), "w") as f:
    json.dump(report, f, indent=2)
  plot({r["name"]: r["curve"] for r in results}, os.path.join(FLAGS.out, "time_to_accuracy.png"),
       f"{report['machine']['processor'] or platform.machine()}, "
       f"{report['machine']['cpus']} cores, {report['machine']['date']}")
  for r in results:
    best = max(r["curve"], key=lambda p: p["knn_top1"])
    print(f"{r['name']}: kNN {r['curve'][0]['knn_top1']:.2f}% at init -> "
          f"{r['curve'][-1]['knn_top1']:.2f}% after {r['curve'][-1]['minutes']:.1f} min "
          f"(best {best['knn_top1']:.2f}%), {r['wall_minutes']:.1f} min wall in all")


if __name__ == "__main__":
  app.run(main)
