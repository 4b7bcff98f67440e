"""Optimisers and learning-rate schedules shared by every method (all from optax)."""

import math
from typing import Any, Callable

import jax
import ml_collections
import optax

from cvrl_jax.models import vit


def scaled_learning_rate(base_lr: float, batch_size: int, scaling: str) -> float:
  """SimCLR's batch-size scaling: 'linear' = lr*B/256, 'sqrt' = lr*sqrt(B)."""
  if scaling == "linear":
    return base_lr * batch_size / 256.0
  if scaling == "sqrt":
    return base_lr * math.sqrt(batch_size)
  if scaling == "none":
    return base_lr
  raise ValueError(f"optimizer.lr_scaling={scaling!r}: use 'linear', 'sqrt' or 'none'.")


def learning_rate_schedule(peak_lr: float, total_steps: int, warmup_steps: int,
                           kind: str = "cosine",
                           boundaries: tuple[float, ...] = ()) -> optax.Schedule:
  """Linear warm-up from 0, then a cosine decay to 0 (or MoCo v1's x0.1 steps).

  ``boundaries`` are fractions of ``total_steps`` at which a 'step' schedule
  multiplies the rate by 0.1.
  """
  warmup_steps = min(warmup_steps, total_steps)
  warmup = optax.linear_schedule(0.0, peak_lr, max(warmup_steps, 1))
  rest = max(total_steps - warmup_steps, 1)
  if kind == "cosine":
    decay = optax.cosine_decay_schedule(peak_lr, rest)
  elif kind == "step":
    decay = optax.piecewise_constant_schedule(
        peak_lr, {int(b * total_steps) - warmup_steps: 0.1 for b in boundaries})
  elif kind == "constant":
    decay = optax.constant_schedule(peak_lr)
  else:
    raise ValueError(f"optimizer.schedule={kind!r}: use 'cosine', 'step' or 'constant'.")
  if warmup_steps == 0:
    return decay
  return optax.join_schedules([warmup, decay], [warmup_steps])


def decay_mask(params: Any) -> Any:
  """True for weight matrices/kernels, False for biases and BatchNorm parameters.

  SimCLR and BYOL exclude biases and BN scale/offset from weight decay and from
  LARS's trust ratio; they are exactly the 1-D parameters.
  """
  return jax.tree.map(lambda p: p.ndim > 1, params)


def under_module(name: str) -> Callable[[Any], Any]:
  """A mask function: True for the parameters inside any module called ``name``."""
  def mask(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(getattr(k, "key", None) == name for k in path), params)
  return mask


def with_probe_optimizer(tx: optax.GradientTransformation,
                         probe_lr: float = 1e-3) -> optax.GradientTransformation:
  """``tx`` for the model; Adam at a fixed rate for the online probe's parameters.

  The probe (methods/base.py) only monitors linear separability. Under the
  method's optimiser it would either barely move (LARS's trust ratio) or diverge
  (plain SGD at a large contrastive learning rate); Adam is stable at any scale.
  """
  in_probe = under_module("probe")
  labels = lambda params: jax.tree.map(lambda p: "probe" if p else "model", in_probe(params))
  return optax.multi_transform({"model": tx, "probe": optax.adam(probe_lr)}, labels)


def create_optimizer(config: ml_collections.ConfigDict, batch_size: int,
                     total_steps: int, steps_per_epoch: int
                     ) -> tuple[optax.GradientTransformation, Callable[[int], float]]:
  """The optimiser named by ``config.optimizer`` and its learning-rate schedule."""
  opt = config.optimizer
  peak = scaled_learning_rate(opt.base_lr, batch_size, opt.lr_scaling)
  schedule = learning_rate_schedule(
      peak, total_steps, int(opt.warmup_epochs * steps_per_epoch),
      opt.schedule, tuple(opt.step_boundaries))
  if opt.name == "lars":
    tx = optax.lars(schedule, weight_decay=opt.weight_decay,
                    weight_decay_mask=decay_mask, trust_ratio_mask=decay_mask,
                    trust_coefficient=opt.trust_coefficient,
                    momentum=opt.momentum)
  elif opt.name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(opt.weight_decay),
        optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov))
  elif opt.name == "adamw":
    tx = optax.adamw(schedule, weight_decay=opt.weight_decay, mask=decay_mask)
  else:
    raise ValueError(f"optimizer.name={opt.name!r}: use 'lars', 'sgd' or 'adamw'.")
  if config.model.frozen_patch_embed:
    # MoCo v3's random patch projection: its gradient is already zero
    # (models/vit.py); this also keeps weight decay from shrinking it.
    tx = optax.chain(tx, optax.masked(optax.set_to_zero(), under_module(vit.PATCH_EMBED)))
  return with_probe_optimizer(tx), schedule
