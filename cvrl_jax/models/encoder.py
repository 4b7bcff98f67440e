"""The encoder factory: ``config.model`` -> a ResNet or a ViT."""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax.models.resnet import ResNet
from cvrl_jax.models.vit import ViT


def compute_dtype(name: str) -> jnp.dtype:
  """``config.model.dtype``: 'auto' is bfloat16 on TPU (its matrix units' native
  type, half the activation bytes) and float32 elsewhere: a CPU has no bfloat16
  units, and XLA's CPU compiler even needs more memory for it (docs/benchmarks.md)."""
  if name == "auto":
    return jnp.bfloat16 if jax.default_backend() == "tpu" else jnp.float32
  if name not in ("float32", "bfloat16"):
    raise ValueError(f"config.model.dtype={name!r}: use 'auto', 'float32' or 'bfloat16'.")
  return jnp.dtype(name)


def make_encoder(model: ml_collections.ConfigDict, axis_name: Optional[str]) -> nn.Module:
  """``model.name`` (the config's ``model`` section): 'resnet' (cross-replica BN
  over ``axis_name``) or 'vit'.

  Mixed precision: the backbone computes in ``model.dtype`` while parameters,
  BatchNorm statistics, the returned features and therefore heads and losses stay
  float32. ``model.remat`` recomputes each residual / transformer block in the
  backward pass: less activation memory for larger per-device batches.
  """
  m = model
  dtype = compute_dtype(m.dtype)
  if m.name == "vit":
    return ViT(width=m.width, depth=m.depth, num_heads=m.num_heads, patch_size=m.patch_size,
               frozen_patch_embed=m.frozen_patch_embed, dtype=dtype, remat=m.remat)
  if m.name != "resnet":
    raise ValueError(f"config.model.name={m.name!r}: use 'resnet' or 'vit'.")
  return ResNet(depth=m.depth, width_multiplier=m.width_multiplier,
                sk_ratio=m.sk_ratio, stem=m.stem, axis_name=axis_name,
                bn_momentum=m.bn_momentum, dtype=dtype, remat=m.remat)
