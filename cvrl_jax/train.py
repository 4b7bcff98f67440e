"""Pre-training, every method: ``train_and_evaluate(config, workdir)``.

One batch's path: ``data.pipeline.train_dataset`` (tf.data, per process) ->
``parallel.host_to_global`` (one array sharded over the mesh) -> ``step.make_train_step``
(``shard_map`` over the mesh: with ``augment.on_device`` the views' colour
augmentation (``data.device_augment``), ``method.loss``, optimiser,
``method.after_update``) -> metrics accumulated on device, written every
``log_every_steps`` by ``loop.train``, which also checkpoints, resumes and runs
the kNN monitor (``evaluation.knn.monitor``) every ``eval_every_steps``.

Resume order: the latest checkpoint in ``workdir/checkpoints``, else a fresh
start. The step, parameters, optimiser and method state are in the checkpoint; the
RNG and the data position are functions of the step, so a resumed run continues
exactly as an uninterrupted one would.
"""

import math

import jax
import ml_collections
from absl import logging

from cvrl_jax import loop, methods, optim, parallel, step
from cvrl_jax.data import device_augment, pipeline, sources
from cvrl_jax.evaluation import knn


def num_train_steps(config: ml_collections.ConfigDict, num_examples: int) -> tuple[int, int]:
  """(total steps, steps per epoch); ``total_steps`` wins over ``num_epochs``."""
  steps_per_epoch = num_examples // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"batch_size={config.batch_size} is larger than the "
                     f"{num_examples} training examples.")
  total = config.total_steps or int(math.ceil(config.num_epochs * steps_per_epoch))
  return total, steps_per_epoch


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Pre-trains ``config.method``; returns the last logged metrics."""
  mesh = parallel.make_mesh(config.num_devices or None)
  local_batch = parallel.check_batch_size(config.batch_size, mesh)
  num_examples = config.num_train_examples or sources.num_examples(config, config.train_split)
  total_steps, steps_per_epoch = num_train_steps(config, num_examples)
  num_classes = sources.num_classes(config)
  loop.make_workdir(workdir)  # after the data is found: a missing dataset writes nothing
  method = methods.get_method(config, num_classes, total_steps)
  tx, schedule = optim.create_optimizer(config, config.batch_size, total_steps,
                                        steps_per_epoch)

  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  image_shape = (local_batch // jax.local_device_count(), config.image_size,
                 config.image_size, 3)
  state = step.create_train_state(method, tx, init_rng, image_shape, mesh)
  train_step = step.make_train_step(method, tx, mesh, device_augment.batch_fn(config))
  step_rng = jax.device_put(step_rng, parallel.replicated(mesh))
  features = knn.method_features(method)
  logging.info("Training %s for %d steps (%d per epoch), global batch %d on %d devices.",
               config.method, total_steps, steps_per_epoch, config.batch_size,
               mesh.devices.size)
  _, summary = loop.train(
      config, workdir, state,
      train_step=lambda s, b: train_step(s, parallel.host_to_global(b, mesh), step_rng),
      batches=lambda start: pipeline.as_numpy(
          pipeline.train_dataset(config, local_batch, start)),
      total_steps=total_steps, schedule=schedule,
      evaluate=lambda s, _: {"knn_top1": knn.monitor(config, features, s, mesh, num_classes)},
      eval_every=config.eval_every_steps, eval_at_start=config.knn.eval_at_start,
      hparams={k: v for k, v in config.items() if not isinstance(v, ml_collections.ConfigDict)})
  return summary
