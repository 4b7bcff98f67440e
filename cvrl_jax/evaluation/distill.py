"""Distillation / self-training (SimCLR v2's third step).

A fine-tuned teacher (a ``configs/finetune.py`` workdir) labels the unlabelled
training images with its temperature-scaled class probabilities, and a student
learns from them:

    L = alpha * distill(student, teacher; tau) + (1 - alpha) * CE(student, labels)

where ``distill = -sum_y softmax(t / tau)_y log softmax(s / tau)_y`` averaged
over the batch, and the labelled cross-entropy is averaged over the batch's
labelled images only (the class-balanced ``label_fraction``). ``alpha=1``: the
paper's default, unlabelled data only. The teacher runs in inference mode on the
same augmented image as the student and is never updated (it lives in the train
state's ``extra``). The student is an encoder of the teacher's kind (or a
smaller one: ``student.depth`` / ``student.width_multiplier``) with a linear
classifier, trained from scratch with the pre-training's optimiser.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from cvrl_jax import checkpoint, loop, parallel
from cvrl_jax.data import sources
from cvrl_jax.evaluation import classification, finetune, pretrained as pretrained_lib


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array,
                      temperature: float) -> jax.Array:
  """Per-example ``-sum_y p_T(y; tau) log p_S(y; tau)`` (no gradient to the teacher)."""
  p_teacher = jax.nn.softmax(lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature)
  log_p_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
  return -jnp.sum(p_teacher * log_p_student, axis=-1)


def masked_mean(x: jax.Array, mask: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """Mean of ``x`` over the rows of the global batch where ``mask`` is 1 (0 if none)."""
  total, count = jnp.sum(x * mask), jnp.sum(mask)
  if axis_name is not None:
    total, count = lax.psum((total, count), axis_name)
  return total / jnp.maximum(count, 1.0)


class Distill(finetune.FineTune):
  """The student is a fine-tuned-style ``Classifier``; ``extra`` holds the teacher."""

  def __init__(self, config, spec, teacher_spec, total_steps):
    super().__init__(config, spec, total_steps)
    self.teacher_spec = teacher_spec

  def init(self, rng, images):
    params, batch_stats, _ = super().init(rng, images)
    teacher = pretrained_lib.build_classifier(self.teacher_spec, None).init(
        rng, images, train=False)
    return params, batch_stats, {"teacher": teacher}

  def load(self, state, loaded):
    return state.replace(extra={"teacher": loaded})  # the student starts from scratch

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    dc = self.config.distill
    teacher = pretrained_lib.build_classifier(self.teacher_spec, None)
    t_logits = teacher.apply(extra["teacher"], batch["image"], train=False)
    logits, updates = self.net(axis_name).apply(
        {"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
        mutable=["batch_stats"])
    distill = parallel.pmean(jnp.mean(distillation_loss(logits, t_logits, dc.temperature)),
                         axis_name)
    labelled = masked_mean(classification.cross_entropy(logits, batch["label"]),
                           batch["labelled"], axis_name)
    loss = dc.alpha * distill + (1.0 - dc.alpha) * labelled
    agree = parallel.pmean(100.0 * jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(t_logits, -1)),
                       axis_name)
    _, metrics = classification.supervised_loss(logits, batch["label"], axis_name)
    metrics.update(loss=loss, distill_loss=distill, labelled_loss=labelled,
                   teacher_agreement=agree)
    return loss, (updates.get("batch_stats", {}), extra, metrics)


def student_spec(config: ml_collections.ConfigDict, teacher_spec: dict) -> dict:
  """The teacher's encoder with ``config.student``'s non-zero fields, and a linear head."""
  model = dict(teacher_spec["model"])
  model.update({k: v for k, v in config.student.to_dict().items() if v})
  return {"model": model, "head_dims": [], "head_bn": True,
          "num_classes": teacher_spec["num_classes"]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Distils ``config.teacher`` into a student; returns the student's final metrics."""
  loop.make_workdir(workdir)
  mesh = parallel.make_mesh(config.num_devices or None)
  teacher = pretrained_lib.load_classifier(config.teacher, mesh, config.teacher_step)
  teacher_config = checkpoint.read_config(config.teacher, "teacher (fine-tuning)")
  config = classification.resolve(config, teacher_config)
  num_classes = classification.num_classes(config)
  if num_classes != teacher.spec["num_classes"]:
    raise ValueError(
        f"The teacher in {config.teacher} classifies {teacher.spec['num_classes']} classes "
        f"but {config.dataset} has {num_classes}: distil on the dataset the teacher was "
        "fine-tuned on (leave --config.dataset empty to use it).")
  spec = student_spec(config, teacher.spec)
  config = classification.with_network(config, spec, teacher_step_used=teacher.step)
  # The student sees every training image; with alpha < 1 the labelled fraction's
  # labels are used too.
  total = sources.num_examples(config, config.train_split)
  limit = min(config.num_train_examples or total, total)
  indices = None if limit == total else np.arange(limit)
  labelled = None
  if config.distill.alpha < 1.0:
    labelled, _ = classification.labelled_subset(config, workdir)
  model = spec["model"]
  what = (f"distillation of {config.teacher} (step {teacher.step}) into a {model['name']}-"
          f"{model['depth']} x{model['width_multiplier']} student, tau "
          f"{config.distill.temperature}, alpha {config.distill.alpha}")
  return classification.run(
      config, workdir, mesh, Distill(config, spec, teacher.spec, total_steps=1),
      teacher.variables, classification.image_stream(config, mesh, indices, labelled),
      classification.eval_images(config, mesh), limit, what)
