"""The loop every run shares: pre-training (``train.py``) and each evaluation.

``train`` takes a state and a jitted step and owns what happens around them:
resume from the workdir's latest checkpoint, ``config.json``, writers
(TensorBoard, log lines, ``metrics.jsonl``), progress and throughput, periodic
evaluation, checkpoints, and the guards: a NaN/inf loss stops the run before it
is saved, SIGTERM (a preempted TPU VM) saves and stops, a tf.data read error
names the data and the fix, and between logs nothing waits for the device
(``jax.transfer_guard_device_to_host``). Each evaluation's row also has
``train_seconds``: the wall time since the process started (imports, data and
compilation included), evaluations excluded: time to accuracy.

Config keys read here: ``log_every_steps``, ``checkpoint_every_steps``,
``max_to_keep``, ``batch_size`` (for images/s), ``dataset`` (in messages) and, for
image folders, ``skip_bad_images`` with the splits (``bad_images_skipped``, written
once at the start).
"""

import contextlib
import json
import math
import os
import signal
import time
from typing import Any, Callable, Iterator, Optional

import jax
import ml_collections
import orbax.checkpoint as ocp
import tensorflow as tf
from absl import logging
from clu import metric_writers, periodic_actions

from cvrl_jax import checkpoint
from cvrl_jax.data import sources

StepFn = Callable[[Any, Any], tuple[Any, dict]]      # (state, host batch) -> (state, metrics)
EvalFn = Callable[[Any, int], dict[str, float]]     # (state, step) -> scalars to write


class JsonlWriter(metric_writers.interface.MetricWriter):
  """Appends ``{"step": s, name: value, ...}`` lines to ``workdir/metrics.jsonl``."""

  def __init__(self, path: str):
    self._path = path

  def write_scalars(self, step: int, scalars) -> None:
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with tf.io.gfile.GFile(self._path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def write_summaries(self, *a, **k): pass
  def write_images(self, *a, **k): pass
  def write_videos(self, *a, **k): pass
  def write_audios(self, *a, **k): pass
  def write_texts(self, *a, **k): pass
  def write_histograms(self, *a, **k): pass
  def write_hparams(self, *a, **k): pass
  def flush(self): pass
  def close(self): pass


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard + log lines + metrics.jsonl on process 0; logging elsewhere."""
  default = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() != 0)
  if jax.process_index() != 0:
    return default
  return metric_writers.MultiWriter(
      [default, JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])


@contextlib.contextmanager
def reading(config: ml_collections.ConfigDict, when: str):
  """Turns a tf.data read failure into an error that names the data and the fix."""
  try:
    yield
  except tf.errors.OpError as e:
    raise RuntimeError(
        f"Reading {config.dataset} failed {when}: {e.message}. The data files may "
        "be corrupt or incomplete: rebuild them with `tfds build` into "
        "--config.data_dir. Checkpoints already written are kept.") from e


class StepRate:
  """Steps per second between consecutive calls (the train-only part of progress)."""

  def __init__(self, step: int):
    self._step, self._time = step, time.perf_counter()

  def rate(self, step: int) -> float:
    now = time.perf_counter()
    rate = (step - self._step) / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    return rate


class Preemption:
  """Turns SIGTERM (a preempted TPU VM) into 'save a checkpoint, then stop'.

  In a multi-process run no Python handler is installed: JAX's preemption service
  (``jax.distributed``) receives the SIGTERM of any one process, and every process
  learns from ``mngr.reached_preemption(step)`` at the same agreed step, saves
  there collectively and stops.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if jax.process_count() > 1:
      return self
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler, orbax's sync point only
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


_LOADED = time.time()


def process_start_time() -> float:
  """Unix time at which this process started (Linux's /proc; elsewhere, when this
  module was imported), so that start-up counts in ``train_seconds``."""
  try:
    with open("/proc/self/stat") as f:
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
    with open("/proc/stat") as f:
      boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return boot + start_ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError, StopIteration):
    return _LOADED


class TrainClock:
  """Wall-clock seconds since the process started, with evaluations left out."""

  def __init__(self):
    self._start, self._excluded = process_start_time(), 0.0

  def seconds(self) -> float:
    return time.time() - self._start - self._excluded

  @contextlib.contextmanager
  def excluded(self):
    began = time.time()
    try:
      yield
    finally:
      self._excluded += time.time() - began


def merge_metrics(acc: Optional[dict], new: dict) -> dict:
  """Metrics accumulated on the device since the last log (clu ``Average``s)."""
  return new if acc is None else {k: acc[k].merge(new[k]) for k in acc}


def _compute(acc: dict) -> dict[str, float]:
  return {k: float(v.compute()) for k, v in acc.items()}


@contextlib.contextmanager
def writing(what: str, workdir: str, errors: tuple[type[Exception], ...] = (
    OSError, tf.errors.OpError), mngr: Optional[ocp.CheckpointManager] = None):
  """Turns a failed write (a full disk, a read-only or vanished workdir) into an error
  that names the path and the cause, and says which checkpoints are intact (after
  ``mngr``'s saves still in flight have finished or failed)."""
  try:
    yield
  except errors as e:
    if mngr is not None:
      try:
        mngr.wait_until_finished()
      except Exception:  # pylint: disable=broad-except  # the failure being reported
        pass
    cause = e.message if isinstance(e, tf.errors.OpError) else f"{type(e).__name__}: {e}"
    if len(cause) > 600:  # tensorstore's are long; the OS's reason comes last
      cause = f"{cause[:250]} ... {cause[-300:]}"
    steps = checkpoint.steps_on_disk(workdir)
    kept = (f"The checkpoints written before (steps {steps}) are intact; rerun the same "
            f"command to resume from step {steps[-1]}" if steps else
            "No checkpoint had been written yet; rerun the same command to start again")
    raise RuntimeError(
        f"Writing {what} in {workdir} failed: {cause}. {kept} once the disk has space "
        "and the workdir is writable, or choose another --workdir.") from e


# A failed save surfaces from orbax's and tensorstore's threads as OSError, or as a
# ValueError ("RESOURCE_EXHAUSTED: ... No space left on device"), among others.
_SAVE_ERRORS = (Exception,)


@contextlib.contextmanager
def _closing(mngr: ocp.CheckpointManager, workdir: str):
  """Closes ``mngr`` at the end, which waits for its pending (asynchronous) saves:
  one that failed raises there (a save can also fail at the next ``save``)."""
  try:
    yield
  finally:
    with writing("checkpoints", workdir, _SAVE_ERRORS, mngr):
      mngr.close()


def make_workdir(workdir: str) -> None:
  """Creates the run's workdir, or says why it cannot be written."""
  with writing("the workdir", workdir):
    tf.io.gfile.makedirs(workdir)


def raise_if_not_finite(summary: dict[str, float], step: int,
                        mngr: ocp.CheckpointManager) -> None:
  """Stops the run, keeping the last good checkpoint, when a logged value is NaN/inf."""
  bad = [k for k, v in summary.items() if not math.isfinite(v)]
  if bad:
    raise FloatingPointError(
        f"{', '.join(bad)} became NaN/inf by step {step}. Training stopped; the last "
        f"good checkpoint (step {mngr.latest_step()}) in {mngr.directory} is kept. "
        "Lower --config.optimizer.base_lr, lengthen the warm-up, or check the data.")


def train(config: ml_collections.ConfigDict, workdir: str, state: Any, *,
          train_step: StepFn, batches: Callable[[int], Iterator[Any]], total_steps: int,
          schedule: Callable[[int], float], evaluate: EvalFn, eval_every: int,
          eval_at_start: bool = False, hparams: Optional[dict] = None
          ) -> tuple[Any, dict[str, float]]:
  """Runs ``train_step`` from the workdir's latest checkpoint (else ``state``) to
  ``total_steps``; returns the final state and the last logged metrics.

  ``batches(start_step)`` yields host batches from ``start_step`` on;
  ``evaluate(state, step)`` runs every ``eval_every`` steps (0: never), at the end,
  at step 0 with ``eval_at_start``, and once if the run had already finished.
  A preempted run returns early: its state's step is below ``total_steps``.
  """
  mngr, state = checkpoint.resume(workdir, state, config.max_to_keep)
  start_step = int(state.step)
  with writing("config.json", workdir):
    checkpoint.write_config(workdir, config)
  writer = create_writer(workdir)
  if start_step == 0 and hparams:
    writer.write_hparams(hparams)
  skipped = sources.bad_images_skipped(config, (config.train_split, config.eval_split))
  if skipped:
    with writing("metrics", workdir, mngr=mngr):
      writer.write_scalars(start_step, {"bad_images_skipped": skipped})

  summary: dict[str, float] = {}
  clock = TrainClock()

  def run_eval(step: int) -> None:
    trained = clock.seconds()
    with clock.excluded():
      result = {**evaluate(state, step), "train_seconds": trained}
    with writing("metrics", workdir, mngr=mngr):
      writer.write_scalars(step, result)
    summary.update(result)

  if start_step == 0 and eval_at_start:
    run_eval(0)  # e.g. the randomly initialised encoder: the baseline to beat
  if start_step >= total_steps:
    run_eval(start_step)  # already finished: report the saved result again
  stream = batches(start_step)
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                           every_steps=config.log_every_steps)
  acc, throughput = None, StepRate(start_step)
  with Preemption() as preemption, _closing(mngr, workdir):
    for step in range(start_step + 1, total_steps + 1):
      # Between logs nothing waits for the device (tests/test_compile_once.py): on
      # an accelerator, an implicit device-to-host read here raises.
      with (jax.profiler.StepTraceAnnotation("train", step_num=step),
            jax.transfer_guard_device_to_host("disallow")):
        with reading(config, f"at step {step}"):
          batch = next(stream)
        state, metrics = train_step(state, batch)
        acc = merge_metrics(acc, metrics)
      with writing("metrics", workdir, mngr=mngr):
        report(step)
      last = step == total_steps
      preempted = preemption.requested or mngr.reached_preemption(step)
      if step % config.log_every_steps == 0 or last or preempted:
        logged = {**_compute(acc), "learning_rate": float(schedule(step - 1)),
                  "images_per_sec": throughput.rate(step) * config.batch_size}
        acc = None
        raise_if_not_finite(logged, step, mngr)
        with writing("metrics", workdir, mngr=mngr):
          writer.write_scalars(step, logged)
        summary.update(logged)
      if (eval_every and step % eval_every == 0) or last:
        run_eval(step)
        throughput = StepRate(step)  # images/s counts training time only
      if step % config.checkpoint_every_steps == 0 or last or preempted:
        if acc is not None:  # steps since the last log: check them before saving
          raise_if_not_finite(_compute(acc), step, mngr)
        # orbax writes in the background: a failure shows at the next save or at the end
        with writing(f"checkpoints (at step {step})", workdir, _SAVE_ERRORS, mngr):
          mngr.save(step, args=ocp.args.StandardSave(state), force=True)
      if preempted:
        logging.warning("Stopped at step %d after preemption; rerun to resume.", step)
        break
  writer.flush()
  return state, summary


def write_summary(workdir: str, line: str) -> None:
  """Logs a run's one-line result and appends it to ``workdir/summary.txt``."""
  logging.info("RESULT %s", line)
  if jax.process_index() == 0:
    with tf.io.gfile.GFile(os.path.join(workdir, "summary.txt"), "a") as f:
      f.write(line + "\n")
