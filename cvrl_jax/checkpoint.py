"""A run's workdir on disk: its checkpoints and its config, written and read here only.

A workdir holds ``config.json`` (the run's config, written at start) and
``checkpoints/<step>/`` (orbax, the whole ``TrainState``). Three kinds of reader:

* a run resuming itself: ``resume`` (the whole state, onto the mesh);
* an evaluation reading another run: ``restore_subtrees`` (only the parts it
  names, e.g. the encoder; the optimiser state is never read);
* the export and pictures: ``restore_on_host`` (everything, as numpy, whatever
  mesh wrote it; the shapes come from the checkpoint itself).

Every reader of the newest checkpoint falls back to the newest one that reads
(a VM taken away mid-write leaves a partial one), saying which it skipped and why.

Local paths are made absolute (orbax needs it); URLs such as ``gs://bucket/run``
are kept as they are and written through orbax's and ``tf.io.gfile``'s own file
systems.
"""

import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
from absl import logging
from jax.experimental import multihost_utils

from cvrl_jax import config as config_lib

CONFIG_FILE = "config.json"
UNREADABLE = "unreadable_checkpoints"  # where resume moves checkpoints that do not read
LATEST = -1  # a step argument meaning "the newest checkpoint"


class RunNotFoundError(FileNotFoundError):
  """The workdir named is missing, or holds nothing to restore."""


def directory(workdir: str) -> str:
  """``workdir/checkpoints``, absolute for local paths, URLs kept as they are."""
  root = workdir if "://" in workdir else os.path.abspath(workdir)
  return os.path.join(root, "checkpoints")


def _save_replicated_arrays_whole_on_cpu() -> None:
  """On CPU devices, orbax saves each replicated array from one replica, whole.

  Every array of a data-parallel state is replicated on every device. Orbax's
  default (off on GPUs already) cuts each into one slice per replica, every
  slice an operation compiled and dispatched on its own: on 8 CPU devices the
  first save of a process took 10.6 s instead of 1.0 s for the ``cpu`` preset's
  parameters and BatchNorm statistics (116 arrays; the whole state, 191 arrays:
  docs/benchmarks.md). Called once the backend is up (after
  ``jax.distributed.initialize``)."""
  if jax.default_backend() == "cpu":
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)


def manager(workdir: str, max_to_keep: int) -> ocp.CheckpointManager:
  """The manager a run saves its own ``TrainState`` with (and resumes from)."""
  _save_replicated_arrays_whole_on_cpu()
  return ocp.CheckpointManager(
      directory(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def _describe(e: Exception) -> str:
  return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def _newest_readable(steps: list[int], restore: Callable[[int], Any], where: str
                     ) -> tuple[Any, int, list[tuple[int, str]]]:
  """``restore(step)`` of the newest step that reads, the step, and the newer steps
  skipped with why; the error names every step when none reads."""
  skipped = []
  for step in sorted(steps, reverse=True):
    try:
      return restore(step), step, skipped
    except Exception as e:  # orbax raises many types; all mean "unreadable" here
      skipped.append((step, _describe(e)))
      logging.warning("The checkpoint at step %d in %s does not read (%s); trying the one "
                      "before.", step, where, skipped[-1][1])
  reasons = "; ".join(f"step {s}: {why}" for s, why in skipped)
  raise RuntimeError(
      f"Cannot read the checkpoint at step {skipped[0][0]} in {where}"
      f"{', nor any older one' if len(skipped) > 1 else ''} ({reasons}). If they are "
      "corrupt, use a new --workdir. If the config changed since they were written, "
      "run with the original config.")


def resume(workdir: str, state: Any, max_to_keep: int) -> tuple[ocp.CheckpointManager, Any]:
  """The manager a run saves with, and ``state`` restored from the newest checkpoint
  of ``workdir`` that reads (``state`` itself if there is none).

  A newer checkpoint that does not read (truncated or deleted files, an empty step
  folder: a VM taken away mid-write) is moved to ``workdir/unreadable_checkpoints/``
  with a warning naming its step and why, so the run resumes from the last complete
  state and saves its later steps again. When none reads, nothing is moved and the
  error names each step.
  """
  mngr = manager(workdir, max_to_keep)
  steps = mngr.all_steps()
  if not steps:
    return mngr, state
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)

  def restore(step):  # a manager of its own: a failed read can leave one confused
    with manager(workdir, max_to_keep) as attempt:
      return attempt.restore(step, args=ocp.args.StandardRestore(abstract))

  restored, step, skipped = _newest_readable(steps, restore, mngr.directory)
  if skipped:
    mngr.close()
    _set_aside(workdir, [s for s, _ in skipped])
    mngr = manager(workdir, max_to_keep)
  logging.info("Resumed from the checkpoint at step %d.", step)
  return mngr, restored


def _set_aside(workdir: str, steps: list[int]) -> None:
  """Moves unreadable step folders out of ``checkpoints/`` (process 0), keeping them."""
  if jax.process_index() == 0:
    aside = os.path.join(os.path.dirname(directory(workdir)), UNREADABLE)
    tf.io.gfile.makedirs(aside)
    for step in steps:
      target = os.path.join(aside, f"{step}-{int(time.time())}")
      tf.io.gfile.rename(os.path.join(directory(workdir), str(step)), target)
      logging.warning("Moved the unreadable checkpoint of step %d to %s; resuming from "
                      "the newest one that reads.", step, target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("cvrl_jax.checkpoint.set_aside")


def _read(workdir: str, step: int, handler: Callable[[], ocp.CheckpointHandler],
          restore: Callable[[ocp.CheckpointManager, int], Any], what: str) -> tuple[Any, int]:
  """``restore(manager, s)`` of another run's checkpoint ``step`` (LATEST: the newest
  that reads), each try with a read-only manager of its own."""
  path = directory(workdir)
  with ocp.CheckpointManager(path, item_handlers=handler()) as mngr:
    steps = mngr.all_steps()
  if not steps:
    raise RunNotFoundError(
        f"The {what} workdir {workdir} has no checkpoints (checkpoints/ is empty or "
        "missing): the run has not saved yet.")
  if step != LATEST and step not in steps:
    raise RunNotFoundError(
        f"No checkpoint at step {step} in {path}; there are steps {steps}. "
        "Use --config.pretrained_step=-1 for the latest, or 0 for the initialisation.")

  def attempt(s):
    with ocp.CheckpointManager(path, item_handlers=handler()) as mngr:
      return restore(mngr, s)

  value, step, _ = _newest_readable(steps if step == LATEST else [step], attempt,
                                    f"the {what} run's {path}")
  return value, step


def restore_subtrees(workdir: str, step: int, abstract: dict, what: str) -> tuple[dict, int]:
  """The subtrees of another run's ``TrainState`` checkpoint that ``abstract`` names.

  ``abstract`` maps top-level state fields (params, batch_stats, extra) to trees
  of ShapeDtypeStructs with shardings; nothing else in the checkpoint is read.
  ``step`` LATEST means the newest that reads (newer unreadable ones are skipped
  with a warning). Returns the values and the step restored.
  """
  # Restore arguments given, not left to orbax to derive: it derives none (and stops
  # on "sharding ... Got None") for a checkpoint holding an empty subtree, as the
  # empty batch_stats of a network without BatchNorm (CPC).
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(
      sharding=x.sharding, global_shape=x.shape, dtype=x.dtype), abstract)
  return _read(workdir, step, ocp.PyTreeCheckpointHandler, lambda mngr, s: mngr.restore(
      s, args=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args,
                                     partial_restore=True)), what)


def restore_on_host(workdir: str, step: int = LATEST, what: str = "training"
                    ) -> tuple[dict, int]:
  """The whole ``TrainState`` of checkpoint ``step`` as a dict of numpy arrays.

  Restores onto one device whatever mesh wrote the checkpoint, and needs neither
  the optimiser nor the data: the tree's shapes come from the checkpoint itself.
  """
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])

  def restore(mngr, s):
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            mngr.item_metadata(s).tree)
    return mngr.restore(s, args=ocp.args.StandardRestore(abstract))

  state, step = _read(workdir, step, ocp.StandardCheckpointHandler, restore, what)
  return jax.tree.map(np.asarray, state), step


def steps_on_disk(workdir: str) -> list[int]:
  """The complete step folders in ``checkpoints/`` (no orbax: for error messages)."""
  path = directory(workdir)
  try:
    names = tf.io.gfile.listdir(path)
  except tf.errors.OpError:
    return []
  return sorted(int(n.strip("/")) for n in names if n.strip("/").isdigit())


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """``workdir/config.json``, what later readers rebuild the run from (process 0)."""
  if jax.process_index() == 0:
    with tf.io.gfile.GFile(os.path.join(workdir, CONFIG_FILE), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


def read_config(workdir: str, what: str = "pre-training") -> ml_collections.ConfigDict:
  """``workdir/config.json`` in today's keys (``config.upgrade``: runs written before a
  key moved still read), or an error naming what is wrong."""
  path = os.path.join(workdir, CONFIG_FILE) if workdir else ""
  if not workdir or not tf.io.gfile.exists(path):
    raise RunNotFoundError(
        f"No {what} run at {workdir!r}: expected its workdir, holding {CONFIG_FILE} and "
        f"checkpoints/ (what `python -m cvrl_jax.main --workdir=DIR` writes). Point "
        f"the command at such a workdir (--config.pretrained or --config.teacher for "
        f"evaluations, --workdir for the tools).")
  try:
    with tf.io.gfile.GFile(path) as f:
      return config_lib.upgrade(json.load(f))
  except (json.JSONDecodeError, ValueError, TypeError) as e:
    raise RunNotFoundError(f"{path} is not a readable config ({e}).") from e

