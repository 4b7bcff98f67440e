"""A run's workdir on disk: its checkpoints and its config, written and read here only.

A workdir holds ``config.json`` (the run's config, written at start) and
``checkpoints/<step>/`` (orbax, the whole ``TrainState``). Three kinds of reader:

* a run resuming itself: ``restore_latest`` (the whole state, onto the mesh);
* an evaluation reading another run: ``restore_subtrees`` (only the parts it
  names, e.g. the encoder; the optimiser state is never read);
* the export and pictures: ``restore_on_host`` (everything, as numpy, whatever
  mesh wrote it; the shapes come from the checkpoint itself).

Local paths are made absolute (orbax needs it); URLs such as ``gs://bucket/run``
are kept as they are and written through orbax's and ``tf.io.gfile``'s own file
systems.
"""

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
from absl import logging

CONFIG_FILE = "config.json"
LATEST = -1  # a step argument meaning "the newest checkpoint"


class RunNotFoundError(FileNotFoundError):
  """The workdir named is missing, or holds nothing to restore."""


def directory(workdir: str) -> str:
  """``workdir/checkpoints``, absolute for local paths, URLs kept as they are."""
  root = workdir if "://" in workdir else os.path.abspath(workdir)
  return os.path.join(root, "checkpoints")


def manager(workdir: str, max_to_keep: int) -> ocp.CheckpointManager:
  """The manager a run saves its own ``TrainState`` with (and resumes from)."""
  return ocp.CheckpointManager(
      directory(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def restore_latest(mngr: ocp.CheckpointManager, state: Any) -> Any:
  """``state`` from the newest checkpoint of ``mngr`` (``state`` itself if none),
  with the shapes and shardings of ``state``."""
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


def _reader(workdir: str, handler: ocp.CheckpointHandler, what: str
            ) -> tuple[ocp.CheckpointManager, list[int]]:
  """A read-only manager of another run's checkpoints, and their steps."""
  mngr = ocp.CheckpointManager(directory(workdir), item_handlers=handler)
  steps = mngr.all_steps()
  if not steps:
    raise RunNotFoundError(
        f"The {what} workdir {workdir} has no checkpoints (checkpoints/ is empty or "
        "missing): the run has not saved yet.")
  return mngr, steps


def _pick(step: int, steps: list[int], mngr: ocp.CheckpointManager) -> int:
  step = max(steps) if step == LATEST else step
  if step not in steps:
    raise RunNotFoundError(
        f"No checkpoint at step {step} in {mngr.directory}; there are steps {steps}. "
        "Use --config.pretrained_step=-1 for the latest, or 0 for the initialisation.")
  return step


def restore_subtrees(workdir: str, step: int, abstract: dict, what: str) -> tuple[dict, int]:
  """The subtrees of another run's ``TrainState`` checkpoint that ``abstract`` names.

  ``abstract`` maps top-level state fields (params, batch_stats, extra) to trees
  of ShapeDtypeStructs with shardings; nothing else in the checkpoint is read.
  ``step`` LATEST means the newest. Returns the values and the step restored.
  """
  mngr, steps = _reader(workdir, ocp.PyTreeCheckpointHandler(), what)
  step = _pick(step, steps, mngr)
  try:
    restored = mngr.restore(step, args=ocp.args.PyTreeRestore(item=abstract,
                                                              partial_restore=True))
  except Exception as e:  # orbax raises many types; all mean the same to a user.
    raise RuntimeError(
        f"Cannot read the {what} checkpoint at step {step} in {mngr.directory} "
        f"({type(e).__name__}: {e}). It may be corrupt, or written by a different "
        "config than its config.json: choose another step with "
        "--config.pretrained_step.") from e
  return restored, step


def restore_on_host(workdir: str, step: int = LATEST, what: str = "training"
                    ) -> tuple[dict, int]:
  """The whole ``TrainState`` of checkpoint ``step`` as a dict of numpy arrays.

  Restores onto one device whatever mesh wrote the checkpoint, and needs neither
  the optimiser nor the data: the tree's shapes come from the checkpoint itself.
  """
  mngr, steps = _reader(workdir, ocp.StandardCheckpointHandler(), what)
  step = _pick(step, steps, mngr)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          mngr.item_metadata(step).tree)
  state = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  mngr.close()
  return jax.tree.map(np.asarray, state), step


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """``workdir/config.json``, what later readers rebuild the run from (process 0)."""
  if jax.process_index() == 0:
    with tf.io.gfile.GFile(os.path.join(workdir, CONFIG_FILE), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


def read_config(workdir: str, what: str = "pre-training") -> ml_collections.ConfigDict:
  """``workdir/config.json`` as a ConfigDict, or an error naming what is wrong."""
  path = os.path.join(workdir, CONFIG_FILE) if workdir else ""
  if not workdir or not tf.io.gfile.exists(path):
    raise RunNotFoundError(
        f"No {what} run at {workdir!r}: expected its workdir, holding {CONFIG_FILE} and "
        f"checkpoints/ (what `python -m cvrl_jax.main --workdir=DIR` writes). Point "
        f"--config.pretrained at such a workdir.")
  try:
    with tf.io.gfile.GFile(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except (json.JSONDecodeError, ValueError, TypeError) as e:
    raise RunNotFoundError(f"{path} is not a readable config ({e}).") from e

