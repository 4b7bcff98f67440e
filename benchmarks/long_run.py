r"""A long run's host resources: RSS, open files and threads, sampled to the end.

    python -m benchmarks.long_run --out=docs/results/long_run.json -- \
        python -m cvrl_jax.main --config=configs/simclr_v2.py:cpu \
        --config.data_dir=../shared/tfds --workdir=/tmp/long --config.total_steps=2000

Runs the command after ``--`` and every ``--every_s`` seconds reads, from /proc, the
resident memory, open file descriptors and threads of its ``cvrl_jax.main`` process
(the command itself, or the one it starts: ``benchmarks.time_to_accuracy`` works
too), with the step the run has logged. Warm-up is everything up to the
``--warmup`` fraction of the samples (compiles, the first kNN evaluation and
checkpoint, tf.data's buffers filling); after it the run must not grow: the median
RSS of the last tenth of the samples against the median of the tenth after warm-up,
and the fewest open descriptors and threads in those two tenths (their level: an
evaluation's threads and a checkpoint's files while they last are not a leak). Writes
every sample and the verdict as JSON; exits 1 when a bound is broken.
"""

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Optional

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "JSON file for the samples and the verdict.")
flags.DEFINE_float("every_s", 5.0, "Seconds between samples.")
flags.DEFINE_float("warmup", 0.25, "Fraction of the samples that is warm-up.")
flags.DEFINE_float("max_rss_growth", 0.05, "Largest relative RSS growth after warm-up.")
flags.DEFINE_integer("max_new_fds", 0, "Most descriptors opened and kept after warm-up.")
flags.DEFINE_integer("max_new_threads", 0, "Most threads started and kept after warm-up.")


def _children(pid: int) -> list[int]:
  try:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
      return [int(c) for c in f.read().split()]
  except OSError:
    return []


def trainer(pid: int) -> Optional[int]:
  """The process of ``pid``'s tree (itself included) that runs ``cvrl_jax.main``."""
  todo = [pid]
  while todo:
    p = todo.pop()
    try:
      with open(f"/proc/{p}/cmdline", "rb") as f:
        if b"cvrl_jax.main" in f.read():
          return p
    except OSError:
      continue
    todo.extend(_children(p))
  return None


def sample(pid: int) -> Optional[dict]:
  """RSS (MiB), open descriptors and threads of ``pid``; None once it has gone."""
  try:
    with open(f"/proc/{pid}/status") as f:
      status = dict(line.split(":", 1) for line in f if ":" in line)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
  except OSError:
    return None
  return {"rss_mib": int(status["VmRSS"].split()[0]) / 1024, "fds": fds,
          "threads": int(status["Threads"])}


def workdir_of(pid: int) -> Optional[str]:
  """The ``--workdir=`` of process ``pid``'s command line."""
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      args = f.read().decode().split("\0")
  except OSError:
    return None
  return next((a.split("=", 1)[1] for a in args if a.startswith("--workdir=")), None)


def last_step(workdir: Optional[str]) -> Optional[int]:
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      lines = f.read().splitlines()
    return json.loads(lines[-1])["step"] if lines else None
  except (OSError, TypeError, ValueError, KeyError):
    return None


def verdict(samples: list[dict], warmup: float, max_rss_growth: float, max_new_fds: int,
            max_new_threads: int) -> dict:
  """Growth after warm-up, against the bounds."""
  start = min(int(len(samples) * warmup), len(samples) - 2)
  tenth = max(len(samples) // 10, 1)
  after = samples[start:]
  early = statistics.median(s["rss_mib"] for s in after[:tenth])
  late = statistics.median(s["rss_mib"] for s in after[-tenth:])
  out = {"samples": len(samples), "warmup_samples": start,
         "rss_mib_after_warmup": early, "rss_mib_at_end": late,
         "rss_growth": late / early - 1,
         # Levels, not peaks: a kNN evaluation's tf.data threads and a checkpoint's
         # open files come and go (some threads idle on for a minute or two); a leak
         # raises the level they return to, the fewest in a tenth of the samples.
         **{f"new_{k}": min(s[k] for s in after[-tenth:]) - min(s[k] for s in after[:tenth])
            for k in ("fds", "threads")}}
  out["ok"] = (out["rss_growth"] <= max_rss_growth and out["new_fds"] <= max_new_fds
               and out["new_threads"] <= max_new_threads)
  return out


def main(argv: list[str]) -> None:
  cmd = argv[1:]
  if not cmd or not FLAGS.out:
    raise app.UsageError("Give --out=FILE and the command to watch after --.")
  began = time.time()
  proc = subprocess.Popen(cmd)
  samples = []
  while proc.poll() is None:
    time.sleep(FLAGS.every_s)
    pid = trainer(proc.pid)
    s = sample(pid) if pid else None
    if s:
      step = last_step(workdir_of(pid))
      samples.append({"seconds": round(time.time() - began, 1), "step": step, **s})
  if proc.returncode:
    raise SystemExit(f"The command exited {proc.returncode}.")
  if len(samples) < 4:
    raise SystemExit(f"Only {len(samples)} samples: lower --every_s or run longer.")
  result = verdict(samples, FLAGS.warmup, FLAGS.max_rss_growth, FLAGS.max_new_fds,
                   FLAGS.max_new_threads)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump({"command": " ".join(cmd), "bounds": {
        "max_rss_growth": FLAGS.max_rss_growth, "max_new_fds": FLAGS.max_new_fds,
        "max_new_threads": FLAGS.max_new_threads}, "verdict": result,
        "samples": samples}, f, indent=1)
  print(json.dumps(result))
  sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
  app.run(main)
