"""The encoder factory: ``config.model`` -> a ResNet or a ViT."""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax.models.lab_split import LabSplit
from cvrl_jax.models.patches import PatchEncoder
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
  over ``axis_name``), 'vit', or 'lab_split' (CMC: two ResNets of half
  ``width_multiplier`` each, on the L and the ab channels; models/lab_split.py).

  Mixed precision: the backbone computes in ``model.dtype`` while parameters,
  BatchNorm statistics, the returned features and therefore heads and losses stay
  float32. ``model.remat`` recomputes each residual / transformer block in the
  backward pass: less activation memory for larger per-device batches.
  ``model.norm`` is the ResNet's normalisation ("batch", or "layer" for CPC);
  ``model.patch_grid`` = (size, stride) with size > 0 makes the encoder a
  ``PatchEncoder`` (CPC: each patch of that grid encoded alone, then pooled).
  """
  m = model
  dtype = compute_dtype(m.dtype)
  if m.name == "vit":
    return with_patch_grid(m, ViT(
        width=m.width, depth=m.depth, num_heads=m.num_heads, patch_size=m.patch_size,
        frozen_patch_embed=m.frozen_patch_embed, dtype=dtype, remat=m.remat))
  if m.name not in ("resnet", "lab_split"):
    raise ValueError(f"config.model.name={m.name!r}: use 'resnet', 'vit' or 'lab_split'.")
  split = m.name == "lab_split"
  resnet = lambda: ResNet(depth=m.depth, width_multiplier=m.width_multiplier / (2 if split else 1),
                          sk_ratio=m.sk_ratio, stem=m.stem, axis_name=axis_name,
                          bn_momentum=m.bn_momentum, dtype=dtype, remat=m.remat,
                          norm=m.norm)
  return with_patch_grid(m, LabSplit(l=resnet(), ab=resnet()) if split else resnet())


def with_patch_grid(m: ml_collections.ConfigDict, backbone: nn.Module) -> nn.Module:
  """``backbone`` on every patch of ``model.patch_grid`` = (size, stride), pooled
  (``PatchEncoder``, CPC's encoder); size 0: ``backbone`` itself."""
  size, stride = m.patch_grid
  return PatchEncoder(backbone, size, stride) if size else backbone
