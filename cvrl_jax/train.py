"""The training loop shared by every method: data -> step -> metrics -> checkpoints.

One batch's path: ``input_pipeline.train_dataset`` (tf.data, per process) ->
``parallel.host_to_global`` (one array sharded over the mesh) -> ``train_step``
(``step.py``: ``shard_map`` over the mesh: with ``augment.on_device`` the views'
colour augmentation (``device_augment``), ``method.loss``, optimiser,
``method.after_update``)
-> metrics accumulated on device, written every ``log_every_steps``.

Resume order: the latest checkpoint in ``workdir/checkpoints``, else a fresh
start. The step, parameters, optimiser and method state are in the checkpoint; the
RNG and the data position are functions of the step, so a resumed run continues
exactly as an uninterrupted one would.
"""

import contextlib
import json
import math
import os
import signal
import time
from typing import Optional

import jax
import ml_collections
import orbax.checkpoint as ocp
import tensorflow as tf
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from cvrl_jax import device_augment, input_pipeline, methods, optim, parallel
from cvrl_jax.step import TrainState, create_train_state, make_train_step  # noqa: F401
from cvrl_jax.evaluation import knn


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


def num_train_steps(config: ml_collections.ConfigDict, num_examples: int) -> tuple[int, int]:
  """(total steps, steps per epoch); ``total_steps`` wins over ``num_epochs``."""
  steps_per_epoch = num_examples // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"batch_size={config.batch_size} is larger than the "
                     f"{num_examples} training examples.")
  total = config.get("total_steps") or int(math.ceil(config.num_epochs * steps_per_epoch))
  return total, steps_per_epoch


def _summary(acc: dict) -> dict[str, float]:
  return {k: float(v.compute()) for k, v in acc.items()}


def _merge(acc: Optional[dict], new: dict) -> dict:
  return new if acc is None else {k: acc[k].merge(new[k]) for k in acc}


@contextlib.contextmanager
def _reading(config: ml_collections.ConfigDict, when: str):
  """Turns a tf.data read failure into an error that names the data and the fix."""
  try:
    yield
  except tf.errors.OpError as e:
    raise RuntimeError(
        f"Reading {config.dataset} failed {when}: {e.message}. The data files may "
        "be corrupt or incomplete: rebuild them with `tfds build` into "
        "--config.data_dir. Checkpoints already written are kept.") from e


def make_features_fn(method: methods.Method):
  """Jitted (features, labels) of a global eval batch; built once per run."""

  @jax.jit
  def features(state: TrainState, batch: dict):
    return method.features(state.params, state.batch_stats, batch["image"]), batch["label"]
  return features


def knn_monitor(config: ml_collections.ConfigDict, features_fn, state: TrainState,
                mesh: jax.sharding.Mesh, num_classes: int) -> float:
  """kNN top-1 (%) of the eval split against a bank of train-split features."""
  kc = config.knn
  local_batch = parallel.check_batch_size(kc.batch_size, mesh, "knn.batch_size")

  def run(split, num):
    ds, _ = input_pipeline.eval_dataset(config, split, local_batch, num)
    batches = (parallel.host_to_global(b, mesh) for b in input_pipeline.as_numpy(ds))
    return knn.extract(
        lambda b: multihost_utils.process_allgather(features_fn(state, b), tiled=True),
        batches)

  with _reading(config, "for the kNN monitor"):
    bank, bank_labels = run(config.train_split, kc.get("num_train_examples"))
    queries, labels = run(config.eval_split, kc.get("num_eval_examples"))
  return knn.knn_top1(queries, labels, bank, bank_labels, num_classes=num_classes,
                      k=kc.k, temperature=kc.temperature)


class _StepRate:
  """Steps per second between consecutive calls (the train-only part of progress)."""

  def __init__(self, step: int):
    self._step, self._time = step, time.perf_counter()

  def rate(self, step: int) -> float:
    now = time.perf_counter()
    rate = (step - self._step) / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    return rate


class _Preemption:
  """Turns SIGTERM (a preempted TPU VM) into 'save a checkpoint, then stop'."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
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


def checkpoint_dir(workdir: str) -> str:
  """``workdir/checkpoints``; local paths made absolute (orbax needs it), URLs such as
  ``gs://bucket/run`` kept as they are (orbax writes them through its own file system)."""
  root = workdir if "://" in workdir else os.path.abspath(workdir)
  return os.path.join(root, "checkpoints")


def _checkpoint_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.get("max_to_keep", 3),
                                           create=True))


def _restore(mngr: ocp.CheckpointManager, state: TrainState) -> TrainState:
  step = mngr.latest_step()
  if step is None:
    return state
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  try:
    restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # orbax raises many types; all mean the same to a user.
    raise RuntimeError(
        f"Cannot read the checkpoint at step {step} in {mngr.directory} "
        f"({type(e).__name__}: {e}). If it is corrupt, move that step's folder "
        f"away to resume from the one before, or use a new --workdir. If the "
        f"config changed since it was written, run with the original config.") from e
  logging.info("Resumed from the checkpoint at step %d.", step)
  return restored


def _raise_if_not_finite(summary: dict[str, float], step: int,
                         mngr: ocp.CheckpointManager) -> None:
  bad = [k for k, v in summary.items() if not math.isfinite(v)]
  if bad:
    raise FloatingPointError(
        f"{', '.join(bad)} became NaN/inf by step {step}. Training stopped; the last "
        f"good checkpoint (step {mngr.latest_step()}) in {mngr.directory} is kept. "
        "Lower --config.optimizer.base_lr, lengthen the warm-up, or check the data.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Pre-trains ``config.method``; returns the last logged metrics."""
  tf.io.gfile.makedirs(workdir)
  mesh = parallel.make_mesh(config.get("num_devices") or None)
  local_batch = parallel.check_batch_size(config.batch_size, mesh)
  builder = input_pipeline.get_builder(config)
  num_examples = config.get("num_train_examples") or input_pipeline.num_examples(
      builder, config.train_split)
  total_steps, steps_per_epoch = num_train_steps(config, num_examples)
  num_classes = input_pipeline.num_classes(config)
  method = methods.get_method(config, num_classes, total_steps)
  tx, schedule = optim.create_optimizer(config, config.batch_size, total_steps,
                                        steps_per_epoch)

  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  image_shape = (local_batch // jax.local_device_count(), config.image_size,
                 config.image_size, 3)
  state = create_train_state(method, tx, init_rng, image_shape, mesh)
  mngr = _checkpoint_manager(workdir, config)
  state = _restore(mngr, state)
  start_step = int(state.step)
  if jax.process_index() == 0:
    with tf.io.gfile.GFile(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  writer = create_writer(workdir)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in config.items() if not isinstance(v, dict)
                          and not isinstance(v, ml_collections.ConfigDict)})
  train_step = make_train_step(method, tx, mesh, device_augment.batch_fn(config))
  step_rng = jax.device_put(step_rng, parallel.replicated(mesh))
  train_iter = input_pipeline.as_numpy(
      input_pipeline.train_dataset(config, local_batch, start_step))
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                           every_steps=config.log_every_steps)
  logging.info("Training %s for %d steps (%d per epoch), global batch %d on %d devices.",
               config.method, total_steps, steps_per_epoch, config.batch_size,
               mesh.devices.size)

  features_fn = make_features_fn(method)

  def evaluate(step: int) -> None:
    top1 = knn_monitor(config, features_fn, state, mesh, num_classes)
    writer.write_scalars(step, {"knn_top1": top1})
    summary["knn_top1"] = top1

  summary: dict[str, float] = {}
  if start_step == 0 and config.knn.get("eval_at_start", True):
    evaluate(0)  # the randomly initialised encoder: the baseline to beat
  acc = None
  throughput = _StepRate(start_step)
  with _Preemption() as preemption, mngr:  # closing waits for pending saves
    for step in range(start_step + 1, total_steps + 1):
      # Between logs nothing waits for the device (tests/test_compile_once.py): on
      # an accelerator, an implicit device-to-host read here raises.
      with (jax.profiler.StepTraceAnnotation("train", step_num=step),
            jax.transfer_guard_device_to_host("disallow")):
        with _reading(config, f"at step {step}"):
          batch = next(train_iter)
        state, metrics = train_step(state, parallel.host_to_global(batch, mesh), step_rng)
        acc = _merge(acc, metrics)
      report(step)
      last = step == total_steps
      preempted = preemption.requested or mngr.reached_preemption(step)
      if step % config.log_every_steps == 0 or last or preempted:
        summary = {**_summary(acc), "learning_rate": float(schedule(step - 1)),
                   "images_per_sec": throughput.rate(step) * config.batch_size}
        acc = None
        _raise_if_not_finite(summary, step, mngr)
        writer.write_scalars(step, summary)
      if step % config.eval_every_steps == 0 or last:
        evaluate(step)
        throughput = _StepRate(step)  # images/s counts training time only
      if step % config.checkpoint_every_steps == 0 or last or preempted:
        if acc is not None:  # steps since the last log: check them before saving
          _raise_if_not_finite(_summary(acc), step, mngr)
        mngr.save(step, args=ocp.args.StandardSave(state), force=True)
      if preempted:
        logging.warning("Stopped at step %d after preemption; rerun to resume.", step)
        break
  writer.flush()
  return summary
