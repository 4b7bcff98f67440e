"""Linear evaluation: a linear classifier on the frozen representation.

The encoder (and, with ``representation_layer=1``, the projection head's first
layer) is restored from the pre-training run and kept in the train state's
``extra``: it is never differentiated, and it runs in inference mode (running
BatchNorm statistics, none updated), as in SimCLR's and MoCo's linear protocols.
Only ``classifier`` is a parameter.

With ``train_augment='crop_flip'`` (the papers') every step runs the encoder on
freshly augmented images. With ``train_augment='none'`` each image's representation is the
same every epoch, so it is computed once for the train and the eval split and
the classifier trains on the cached features: minutes instead of hours on a CPU.
"""

import time

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from jax import lax
from jax.experimental import multihost_utils

from cvrl_jax import loop, parallel, step
from cvrl_jax.data import pipeline
from cvrl_jax.evaluation import classification, knn, pretrained as pretrained_lib


class LinearProbe(classification.Task):
  """Trains ``classifier`` on features of the frozen backbone held in ``extra``."""

  def init(self, rng, images):
    variables = self.net(None).init(rng, images, train=False)
    backbone = {k: {m: v for m, v in tree.items() if m != "classifier"}
                for k, tree in variables.items()}
    return {"classifier": variables["params"]["classifier"]}, {}, backbone

  def load(self, state, loaded):
    return state.replace(extra=loaded)

  def frozen_features(self, extra, batch):
    if "features" in batch:
      return batch["features"]
    return lax.stop_gradient(self.net(None).apply(extra, batch["image"], train=False,
                                                   method="represent"))

  def _logits(self, params, extra, batch):
    return self.net(None).apply({"params": params}, self.frozen_features(extra, batch),
                                method="classify")

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    loss, metrics = classification.supervised_loss(self._logits(params, extra, batch),
                                                   batch["label"], axis_name)
    return loss, (batch_stats, extra, metrics)

  def eval_logits(self, params, batch_stats, extra, batch):
    return self._logits(params, extra, batch)


def extract_features(task: LinearProbe, state, batches, mesh) -> tuple[np.ndarray, np.ndarray]:
  """Representations and labels of every real (unpadded) example, on every process."""
  @jax.jit
  def features(extra, batch):
    return task.frozen_features(extra, batch), batch["label"]

  feats, labels = knn.extract(
      lambda b: multihost_utils.process_allgather(features(state.extra, b), tiled=True),
      (parallel.host_to_global(b, mesh) for b in batches))
  keep = labels >= 0
  return feats[keep], labels[keep]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Linear evaluation of ``config.pretrained``; returns the final metrics."""
  started = time.time()
  config, mesh, pre, spec = classification.setup(config, workdir, frozen_backbone=True)
  indices, num_train = classification.labelled_subset(config, workdir)
  task = LinearProbe(config, spec, total_steps=1)
  loaded = pretrained_lib.backbone_variables(pre, spec)
  eval_images = classification.eval_images(config, mesh)
  what = f"linear eval of {classification.describe(config, pre)}"
  if config.train_augment != "none":
    return classification.run(config, workdir, mesh, task, loaded,
                              classification.image_stream(config, mesh, indices),
                              eval_images, num_train, what)

  # No augmentation: each representation is computed once.
  state = task.load(step.create_train_state(
      task, optax.identity(), jax.random.PRNGKey(0),
      (2, config.image_size, config.image_size, 3), mesh), loaded)
  local = parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
  with loop.reading(config, "while caching features"):
    train_x, train_y = extract_features(task, state, pipeline.as_numpy(
        pipeline.eval_dataset(config, config.train_split, local, indices=indices)[0]), mesh)
    eval_x, eval_y = extract_features(task, state, eval_images(), mesh)
  logging.info("Cached features: train %s, eval %s.", train_x.shape, eval_x.shape)

  def eval_batches():  # this process's slice of each padded global batch
    size, lo = config.eval_batch_size, jax.process_index() * local
    for start in range(0, len(eval_x), size):
      x = eval_x[start + lo:start + lo + local]
      y = eval_y[start + lo:start + lo + local]
      pad = local - len(x)
      yield {"features": np.pad(x, ((0, pad), (0, 0))),
             "label": np.pad(y, (0, pad), constant_values=-1),
             "mask": np.pad(np.ones(len(x), np.float32), (0, pad))}

  stream = lambda start: pipeline.feature_batches(train_x, train_y, config.batch_size,
                                              config.seed, start)
  return classification.run(config, workdir, mesh, task, loaded, stream, eval_batches,
                            len(train_x), what + ", cached features", started)
