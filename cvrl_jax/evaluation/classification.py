"""What every classifier evaluation shares: linear eval, fine-tuning, distillation.

A task is a ``methods.base.Method`` whose "method" is supervised: its ``loss``
runs per device under ``step.make_train_step``'s ``shard_map``, and ``run`` hands
it to ``loop.train``, so evaluations get pre-training's step as it is
(global-batch gradients, cross-replica BatchNorm, donated state) and its loop
(checkpoints and resume, writers, NaN and transfer guards, preemption). What stays frozen lives in the train state's ``extra``,
which is never differentiated or updated: a linear probe's encoder, a
distillation teacher.

Evaluation is exact over the whole eval split: padded batches carry a mask, and
the correct top-1 / top-5 counts are summed, not averaged over batches.
"""

import os
import time
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from cvrl_jax import loop, optim, parallel, step
from cvrl_jax.data import pipeline, sources, subsets
from cvrl_jax.evaluation import pretrained as pretrained_lib
from cvrl_jax.methods import base


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example cross-entropy; rows labelled -1 (padding) give 0."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[:, None], axis=-1)[:, 0]
  return jnp.where(labels >= 0, nll, 0.0)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the ``k`` highest logits (all classes if fewer)."""
  _, top = jax.lax.top_k(logits, min(k, logits.shape[-1]))
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def supervised_loss(logits: jax.Array, labels: jax.Array, axis_name: Optional[str]
                    ) -> tuple[jax.Array, dict]:
  """Mean cross-entropy over the global batch, and the batch's top-1 (%)."""
  loss, metrics = base.probe_loss_and_metrics(logits, labels, axis_name)
  return loss, {"loss": loss, "train_top1": metrics["probe_top1"]}


class Task(base.Method):
  """A supervised ``Method`` on a ``Classifier``; subclasses choose what trains."""

  def __init__(self, config: ml_collections.ConfigDict, spec: dict, total_steps: int):
    super().__init__(config, spec["num_classes"], total_steps)
    self.spec = spec

  def net(self, axis_name: Optional[str]) -> pretrained_lib.Classifier:
    return pretrained_lib.build_classifier(self.spec, axis_name)

  def eval_logits(self, params, batch_stats, extra, batch: dict) -> jax.Array:
    """Logits of a batch in eval mode ({"image"} or precomputed {"features"})."""
    raise NotImplementedError

  def load(self, state: step.TrainState, loaded: dict) -> step.TrainState:
    """``state`` with the trained-elsewhere variables (pre-trained encoder, teacher) in."""
    raise NotImplementedError


def make_eval_step(task: Task):
  """Jitted sums over a global eval batch: correct top-1 / top-5, count, loss."""

  @jax.jit
  def eval_step(state: step.TrainState, batch: dict) -> dict:
    logits = task.eval_logits(state.params, state.batch_stats, state.extra, batch)
    labels, mask = batch["label"], batch["mask"]
    return {"correct1": jnp.sum(topk_correct(logits, labels, 1) * mask),
            "correct5": jnp.sum(topk_correct(logits, labels, 5) * mask),
            "count": jnp.sum(mask),
            "nll": jnp.sum(cross_entropy(logits, labels) * mask)}
  return eval_step


def evaluate(eval_step, state: step.TrainState, batches: Iterator[dict],
             mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Top-1 / top-5 (%) and mean loss over every unpadded example of ``batches``."""
  totals: dict[str, float] = {}
  for batch in batches:
    sums = eval_step(state, parallel.host_to_global(batch, mesh))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + float(v)  # float64 on the host: exact counts
  count = max(totals.get("count", 0.0), 1.0)
  return {"eval_top1": 100.0 * totals["correct1"] / count,
          "eval_top5": 100.0 * totals["correct5"] / count,
          "eval_loss": totals["nll"] / count, "eval_count": totals["count"]}


def resolve(config: ml_collections.ConfigDict, source: ml_collections.ConfigDict
            ) -> ml_collections.ConfigDict:
  """An unlocked copy of ``config`` where empty data fields take ``source``'s value.

  ``dataset``, ``data_dir``, the splits, ``image_size`` and
  ``eval_crop_proportion`` left empty (or 0) mean "as the run evaluated was
  trained": pre-training's for linear eval, the teacher's for distillation.
  """
  c = ml_collections.ConfigDict(config.to_dict())
  for key in ("dataset", "data_dir", "train_split", "eval_split", "image_size",
              "eval_crop_proportion"):
    if not c[key] and source[key]:
      c[key] = source[key]
  if c.dataset != source.dataset and not config.data_dir:
    c.data_dir = ""  # another dataset: $TFDS_DATA_DIR or the TFDS default, not source's
  return c


def labelled_subset(config: ml_collections.ConfigDict, workdir: str
                    ) -> tuple[Optional[np.ndarray], int]:
  """Indices of the labelled training examples (None: all) and their count.

  A ``label_fraction`` below 1 draws a class-balanced subset with
  ``label_seed`` and lists it in ``workdir/labelled_examples.csv``.
  """
  total = sources.num_examples(config, config.train_split)
  limit = config.num_train_examples or total
  fraction = config.label_fraction
  if fraction >= 1.0 and limit >= total:
    return None, total
  labels, ids = sources.read_labels(config, config.train_split)
  labels = labels[:limit]
  indices = subsets.class_balanced_fraction(labels, fraction, config.label_seed)
  path = os.path.join(workdir, "labelled_examples.csv")
  fingerprint = subsets.write_listing(path, indices, labels, ids)
  per_class = np.bincount(labels[indices])
  logging.info("Labelled examples: %d of %d (%s), %d-%d per class, fingerprint %s, listed "
               "in %s.", len(indices), total, f"{fraction:.2%} class-balanced, seed "
               f"{config.label_seed}", per_class.min(), per_class.max(),
               fingerprint, path)
  return indices, len(indices)


def create_optimizer(config: ml_collections.ConfigDict, model_config: ml_collections.ConfigDict,
                     total_steps: int, steps_per_epoch: int
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``config.optimizer`` (see ``optim.create_optimizer``) for the network's weights.

  Under LARS the linear classifier takes plain momentum steps at the same rate:
  it starts at zero, where a trust ratio is meaningless (SimCLR's fine-tuning
  excludes its supervised head from LARS's adaptation and weight decay too).
  """
  opt_config = ml_collections.ConfigDict({"optimizer": config.optimizer.to_dict(),
                                          "model": model_config.to_dict()})
  tx, schedule = optim.create_optimizer(opt_config, config.batch_size, total_steps,
                                        steps_per_epoch)
  if config.optimizer.name == "lars":
    in_classifier = optim.under_module("classifier")
    labels = lambda params: jax.tree.map(lambda c: "classifier" if c else "network",
                                         in_classifier(params))
    tx = optax.multi_transform(
        {"network": tx, "classifier": optax.sgd(schedule, momentum=config.optimizer.momentum)},
        labels)
  return tx, schedule


def run(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh,
        task: Task, loaded: dict, make_stream: Callable[[int], Iterator[dict]],
        eval_batches: Callable[[], Iterator[dict]], num_train: int,
        description: str, started: Optional[float] = None) -> dict[str, float]:
  """Trains ``task`` from ``loaded`` (or the workdir's checkpoint), evaluates, writes.

  ``make_stream(start_step)`` yields host batches for training, ``eval_batches()``
  the padded eval split. ``loop.train`` writes ``config.json`` (with the network)
  and the metrics; a finished run logs a one-line summary (wall time from
  ``started``, e.g. before features were cached) to ``summary.txt``. Returns the
  final metrics.
  """
  started = started or time.time()
  steps_per_epoch = max(num_train // config.batch_size, 1)
  total_steps = config.total_steps or int(np.ceil(config.num_epochs * steps_per_epoch))
  task.total_steps = total_steps
  tx, schedule = create_optimizer(config, ml_collections.ConfigDict(task.spec["model"]),
                                  total_steps, steps_per_epoch)
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  shape = (2, config.image_size, config.image_size, 3)
  state = task.load(step.create_train_state(task, tx, init_rng, shape, mesh), loaded)
  train_step, eval_step = step.make_train_step(task, tx, mesh), make_eval_step(task)
  step_rng = jax.device_put(step_rng, parallel.replicated(mesh))
  logging.info("%s: %d steps (%d per epoch over %d labelled examples), global batch %d on "
               "%d devices.", description, total_steps, steps_per_epoch, num_train,
               config.batch_size, mesh.devices.size)

  def run_eval(state: step.TrainState, _) -> dict[str, float]:
    with loop.reading(config, "during evaluation"):
      return evaluate(eval_step, state, eval_batches(), mesh)

  state, summary = loop.train(
      config, workdir, state,
      train_step=lambda s, b: train_step(s, parallel.host_to_global(b, mesh), step_rng),
      batches=make_stream, total_steps=total_steps, schedule=schedule, evaluate=run_eval,
      eval_every=config.eval_every_steps)
  if int(state.step) < total_steps:  # preempted: the rerun reports
    return summary
  minutes = (time.time() - started) / 60
  loop.write_summary(workdir, (
      f"{description}: top-1 {summary['eval_top1']:.2f}%, top-5 "
      f"{summary['eval_top5']:.2f}% on {config.dataset}:{config.eval_split} "
      f"({int(summary['eval_count'])} images), {total_steps} steps, {minutes:.1f} min."))
  return summary


def setup(config: ml_collections.ConfigDict, workdir: str, frozen_backbone: bool = False
          ) -> tuple[ml_collections.ConfigDict, jax.sharding.Mesh, pretrained_lib.Pretrained, dict]:
  """What linear eval, fine-tuning and kNN start with: the mesh, the pre-trained
  run, the resolved config (recording the network) and the network's spec."""
  loop.make_workdir(workdir)
  mesh = parallel.make_mesh(config.num_devices or None)
  pre = pretrained_lib.load_pretrained(config.pretrained, config.pretrained_step, mesh)
  config = resolve(config, pre.config)
  spec = pretrained_lib.network_spec(pre.config, config.representation_layer,
                                     num_classes(config), pre.params.get(base.HEAD, {}))
  if frozen_backbone:  # load_classifier then finds the backbone in the state's ``extra``
    spec["frozen_backbone"] = True
  return with_network(config, spec, pretrained_step_used=pre.step), mesh, pre, spec


def describe(config: ml_collections.ConfigDict, pre: pretrained_lib.Pretrained) -> str:
  return (f"{config.pretrained} (step {pre.step}{', random init' if pre.step == 0 else ''}), "
          f"representation layer {config.representation_layer}")


def num_classes(config: ml_collections.ConfigDict) -> int:
  """Classes of ``config.dataset`` (checks that its eval split exists too)."""
  sources.num_examples(config, config.eval_split)
  return sources.num_classes(config)


def eval_images(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                ) -> Callable[[], Iterator[dict]]:
  """The padded, centre-cropped eval split, as a function giving a fresh pass."""
  local = parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
  return lambda: pipeline.as_numpy(
      pipeline.eval_dataset(config, config.eval_split, local, config.num_eval_examples or None)[0])


def image_stream(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                 indices: Optional[np.ndarray], labelled: Optional[np.ndarray] = None
                 ) -> Callable[[int], Iterator[dict]]:
  local = parallel.check_batch_size(config.batch_size, mesh)
  return lambda start: pipeline.as_numpy(
      pipeline.labelled_dataset(config, local, start, indices, labelled))


def with_network(config: ml_collections.ConfigDict, spec: dict, **fields: Any
                 ) -> ml_collections.ConfigDict:
  """``config`` recording the network it trains (and provenance) for config.json."""
  config.network = spec
  for k, v in fields.items():
    config[k] = v
  return config
