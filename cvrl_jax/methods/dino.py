"""DINO (Caron et al. 2021): self-distillation with no labels.

A student (encoder -> ``DINOHead``) learns by gradient descent to match, on every
crop, the output distribution of a teacher of the same shape on the *other*
large crops; the teacher sees only the two large crops and follows the student
as an exponential moving average, ``teacher <- m teacher + (1 - m) student``, m
rising from ``dino.momentum`` to 1 on a half cosine (BYOL's and MoCo v3's
schedule, ``base.cosine_momentum``). The loss is ``losses.dino_loss``.

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

from cvrl_jax import losses, models, parallel
from cvrl_jax.methods import base

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


def teacher_distribution(teacher: jax.Array, center: jax.Array,
                         temperature: jax.Array) -> jax.Array:
  """``softmax((t - c) / temperature)``: centred and sharpened, no gradient."""
  return lax.stop_gradient(jax.nn.softmax((teacher.astype(jnp.float32) - center) / temperature))


def update_center(center: jax.Array, teacher: jax.Array, momentum: float,
                  axis_name: Optional[str]) -> jax.Array:
  """EMA of the teacher's mean output over the global batch (all large crops)."""
  batch_center = parallel.pmean(jnp.mean(teacher.astype(jnp.float32), axis=0), axis_name)
  return momentum * center + (1.0 - momentum) * lax.stop_gradient(batch_center)


class DINO(base.MomentumMethod):
  names = ("teacher_params", "teacher_batch_stats")
  defaults = {"dino": dict(
      hidden_dim=2048, bottleneck_dim=256, out_dim=65536, num_layers=3,
      use_bn_in_head=True, norm_last_layer=True, freeze_last_layer_epochs=1.0,
      momentum=0.996,           # teacher EMA at step 0; rises to 1 on a half cosine
      center_momentum=0.9, student_temp=0.1,
      warmup_teacher_temp=0.04, teacher_temp=0.04, teacher_temp_warmup_epochs=0.0)}

  def __init__(self, config, num_classes, total_steps):
    super().__init__(config, num_classes, total_steps)
    d, per_epoch = config.dino, base.steps_per_epoch(config, total_steps)
    self.freeze_steps = round(d.freeze_last_layer_epochs * per_epoch)
    self.temp_warmup_steps = d.teacher_temp_warmup_epochs * per_epoch

  def net(self, axis_name: Optional[str]) -> base.Net:
    d = self.config.dino
    head = DINOHead(d.hidden_dim, d.bottleneck_dim, d.out_dim, num_layers=d.num_layers,
                    use_bn=d.use_bn_in_head, norm_last_layer=d.norm_last_layer,
                    axis_name=axis_name)
    return base.Net(models.make_encoder(self.config.model, axis_name), head,
                    num_classes=self.num_classes)

  def momentum(self, step: jax.Array) -> jax.Array:
    return base.cosine_momentum(step, self.total_steps, self.config.dino.momentum)

  def teacher_temp(self, step: jax.Array) -> jax.Array:
    d = self.config.dino
    return teacher_temperature(step, self.temp_warmup_steps, d.warmup_teacher_temp,
                               d.teacher_temp)

  def init(self, rng, images):
    params, batch_stats, extra = super().init(rng, images)  # and the teacher
    return params, batch_stats, {**extra, "center": jnp.zeros((self.config.dino.out_dim,))}

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng
    d, views, small = self.config.dino, batch["views"], batch.get("small_views", ())
    for name in (LAST_LAYER, f"{LAST_LAYER}_g"):
      if name in params[base.HEAD]:
        params = base.freeze(params, (base.HEAD, name), step < self.freeze_steps)
    (_, student, _, logits), batch_stats = base.apply_together(self.net(axis_name), params,
                                                               batch_stats, views, small)
    (_, teacher, _, _), teacher_batch_stats = base.apply_together(
        self.target_net(axis_name), extra["teacher_params"], extra["teacher_batch_stats"], views)
    teacher = lax.stop_gradient(teacher)
    temp = self.teacher_temp(step)
    probs = [teacher_distribution(t, extra["center"], temp) for t in jnp.split(teacher, len(views))]
    loss = losses.dino_loss(jnp.split(student, len(views) + len(small)), probs,
                            student_temp=d.student_temp)
    extra = {**extra, "teacher_batch_stats": teacher_batch_stats,
             "center": update_center(extra["center"], teacher, d.center_momentum, axis_name)}
    # Collapse monitors: the teacher distribution's entropy (log K: uniform collapse).
    entropy = jnp.mean(jnp.sum(-probs[0] * jnp.log(probs[0] + 1e-12), -1))
    return base.with_probe(parallel.pmean(loss, axis_name), logits[:views[0].shape[0]],
                           batch["label"], axis_name, batch_stats, extra,
                           teacher_entropy=parallel.pmean(entropy, axis_name),
                           teacher_temp=temp, teacher_momentum=self.momentum(step))


METHODS = {"dino": DINO}
