"""DINO (Caron et al. 2021): self-distillation with no labels.

A student (encoder -> ``DINOHead``) learns by gradient descent to match, on every
crop, the output distribution of a teacher of the same shape on the *other*
large crops; the teacher sees only the two large crops and follows the student
as an exponential moving average, ``teacher <- m teacher + (1 - m) student``, m
rising from ``dino.momentum`` to 1 on a half cosine (MoCo v3's schedule,
``moco.cosine_momentum``).

What keeps it from collapsing, and where it lives here:

* Centring: the teacher's outputs minus a centre ``c``, an EMA (``center_momentum``)
  of the teacher's mean output over the *global* batch (``pmean``), kept in the
  extra state and updated after it is used, as DINO does.
* Sharpening: the teacher's softmax at a low temperature, warmed up linearly from
  ``warmup_teacher_temp`` to ``teacher_temp`` over ``teacher_temp_warmup_epochs``
  (per step here; per epoch in DINO), the student's at ``student_temp``.

The head's last layer is weight-normalised (``w = g v / |v|`` per output, g = 1
and fixed when ``norm_last_layer``), and gets no gradient during the first
``freeze_last_layer_epochs``. Under decoupled weight decay a frozen, normalised
layer does not change its function: decay only rescales v.

Backbones: ViT (``configs/dino.py:vit_small``) or ResNet; the ResNet's BatchNorm
and the head's optional BN are global over the mesh. The teacher runs in train
mode (batch statistics), its BN running averages are part of its state. kNN and
the probe use the student's encoder (DINO evaluates the teacher's).
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cvrl_jax import losses, models
from cvrl_jax.methods import base
from cvrl_jax.methods.moco import cosine_momentum, momentum_update
from cvrl_jax.methods.swav import MultiCropNet, crops, encoder_features, freeze

TEACHER_MODULES = ("encoder", "head")
LAST_LAYER = "last_layer"
_trunc_normal = nn.initializers.truncated_normal(0.02)


class DINOHead(nn.Module):
  """MLP (GELU, optional BN) -> bottleneck -> L2 normalisation -> weight-normalised
  linear layer to ``out_dim`` logits."""
  hidden_dim: int
  bottleneck_dim: int
  out_dim: int
  num_layers: int = 3
  use_bn: bool = False
  norm_last_layer: bool = True
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.num_layers - 1):
      x = nn.Dense(self.hidden_dim, kernel_init=_trunc_normal, name=f"dense_{i}")(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         axis_name=self.axis_name if train else None, name=f"bn_{i}")(x)
      x = nn.gelu(x, approximate=False)
    x = nn.Dense(self.bottleneck_dim, kernel_init=_trunc_normal, name="bottleneck")(x)
    x = losses.l2_normalize(x)
    v = self.param(LAST_LAYER, _trunc_normal, (self.bottleneck_dim, self.out_dim))
    w = losses.l2_normalize(v, axis=0)
    if not self.norm_last_layer:
      w = w * self.param(f"{LAST_LAYER}_g", nn.initializers.ones, (self.out_dim,))
    return x @ w


def teacher_temperature(step: jax.Array, warmup_steps: float, start: float,
                        end: float) -> jax.Array:
  """Linear from ``start`` to ``end`` over ``warmup_steps``, then ``end``."""
  progress = jnp.minimum(step / max(warmup_steps, 1.0), 1.0)
  return start + (end - start) * progress


def dino_loss(student: list[jax.Array], teacher_probs: list[jax.Array], *,
              student_temp: float) -> jax.Array:
  """Cross-entropy of every student crop against every teacher crop but its own.

  ``teacher_probs[i]`` (n, K): the centred, sharpened teacher distribution of
  large crop i; ``student[v]`` (n, K): student logits of crop v (crops
  0..len(teacher_probs)-1 are the same large crops). Mean over the (i, v != i)
  pairs of ``-sum_k p_k log softmax(s / student_temp)_k``, averaged over the n
  local samples (``pmean`` over the mesh gives the global batch's).
  """
  log_p = [jax.nn.log_softmax(s.astype(jnp.float32) / student_temp) for s in student]
  pairs = [jnp.mean(jnp.sum(-p * lp, axis=-1))
           for i, p in enumerate(teacher_probs) for v, lp in enumerate(log_p) if v != i]
  return sum(pairs) / len(pairs)


def teacher_distribution(teacher: jax.Array, center: jax.Array,
                         temperature: jax.Array) -> jax.Array:
  """``softmax((t - c) / temperature)``: centred and sharpened, no gradient."""
  return lax.stop_gradient(jax.nn.softmax((teacher.astype(jnp.float32) - center) / temperature))


def update_center(center: jax.Array, teacher: jax.Array, momentum: float,
                  axis_name: Optional[str]) -> jax.Array:
  """EMA of the teacher's mean output over the global batch (all large crops)."""
  batch_center = base.pmean(jnp.mean(teacher.astype(jnp.float32), axis=0), axis_name)
  return momentum * center + (1.0 - momentum) * lax.stop_gradient(batch_center)


class DINO(base.Method):

  def __init__(self, config, num_classes, total_steps):
    super().__init__(config, num_classes, total_steps)
    d, per_epoch = config.dino, base.steps_per_epoch(config, total_steps)
    self.freeze_steps = round(d.freeze_last_layer_epochs * per_epoch)
    self.temp_warmup_steps = d.teacher_temp_warmup_epochs * per_epoch

  def _net(self, axis_name: Optional[str], num_classes: int = 0) -> MultiCropNet:
    d = self.config.dino
    head = DINOHead(d.hidden_dim, d.bottleneck_dim, d.out_dim, num_layers=d.num_layers,
                    use_bn=d.use_bn_in_head, norm_last_layer=d.norm_last_layer,
                    axis_name=axis_name)
    return MultiCropNet(models.make_encoder(self.config.model, axis_name), head, num_classes)

  def momentum(self, step: jax.Array) -> jax.Array:
    return cosine_momentum(step, self.total_steps, self.config.dino.momentum)

  def teacher_temp(self, step: jax.Array) -> jax.Array:
    d = self.config.dino
    return teacher_temperature(step, self.temp_warmup_steps, d.warmup_teacher_temp,
                               d.teacher_temp)

  def init(self, rng, images):
    variables = self._net(None, self.num_classes).init(rng, images, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    # The teacher starts as a copy of the student.
    pick = lambda tree: {k: tree[k] for k in TEACHER_MODULES if k in tree}
    return params, batch_stats, {"teacher_params": pick(params),
                                 "teacher_batch_stats": pick(batch_stats),
                                 "center": jnp.zeros((self.config.dino.out_dim,))}

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng
    d = self.config.dino
    large, small, num_crops = crops(batch)
    n, num_large = batch["label"].shape[0], len(batch["views"])
    for name in (LAST_LAYER, f"{LAST_LAYER}_g"):
      if name in params["head"]:
        params = freeze(params, ("head", name), step < self.freeze_steps)
    (student, logits), updates = self._net(axis_name, self.num_classes).apply(
        {"params": params, "batch_stats": batch_stats}, large, small, train=True,
        mutable=["batch_stats"])
    teacher, teacher_updates = self._net(axis_name).apply(
        {"params": extra["teacher_params"], "batch_stats": extra["teacher_batch_stats"]},
        large, train=True, mutable=["batch_stats"])
    teacher = lax.stop_gradient(teacher)
    temp = self.teacher_temp(step)
    probs = [teacher_distribution(t, extra["center"], temp) for t in jnp.split(teacher, num_large)]
    loss = base.pmean(dino_loss(jnp.split(student, num_crops), probs,
                                student_temp=d.student_temp), axis_name)
    probe_loss, metrics = base.probe_loss_and_metrics(logits[:n], batch["label"], axis_name)
    extra = {**extra, "teacher_batch_stats": teacher_updates.get("batch_stats", {}),
             "center": update_center(extra["center"], teacher, d.center_momentum, axis_name)}
    # Collapse monitors: the teacher distribution's entropy (log K: uniform collapse).
    entropy = base.pmean(jnp.mean(jnp.sum(-probs[0] * jnp.log(probs[0] + 1e-12), -1)), axis_name)
    metrics.update(loss=loss, teacher_entropy=entropy, teacher_temp=temp,
                   teacher_momentum=self.momentum(step))
    return loss + probe_loss, (updates.get("batch_stats", {}), extra, metrics)

  def after_update(self, params, batch_stats, extra, step):
    del batch_stats
    teacher = momentum_update(extra["teacher_params"], params, self.momentum(step + 1))
    return {**extra, "teacher_params": teacher}

  def features(self, params, batch_stats, images):
    return encoder_features(self.config, params, batch_stats, images)


METHODS = {"dino": DINO}
