"""A grid of overlapping patches, each encoded alone (CPC's encoder).

``cut_patches`` cuts every ``stride`` pixels a ``size`` x ``size`` patch out of
an image: a [B, H, W, C] batch gives [B, gh, gw, size, size, C] with
``gh = (H - size) // stride + 1`` (likewise ``gw``); pixels past the last
whole patch are left out. ``PatchEncoder`` runs its backbone on every patch as
an image of its own and returns the grid of patch vectors [B, gh, gw, D], or
(the default) their mean over the grid [B, D]: the representation that every
evaluation, the kNN monitor and export see, as CPC evaluates its encoder on
patch features pooled over the grid.

The backbone's variables sit directly under the encoder's (``nn.share_scope``):
a patch encoder has the parameter names of its ResNet, and an export of its
parameters is that ResNet's.
"""

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def grid_shape(image_size: int, size: int, stride: int) -> int:
  """Patches along a side of ``image_size`` px: ``(image_size - size) // stride + 1``."""
  if not 0 < size <= image_size or stride <= 0:
    raise ValueError(f"A patch grid of {size} px patches at stride {stride} does not fit "
                     f"in {image_size} px images: use 0 < size <= {image_size}, stride > 0.")
  return (image_size - size) // stride + 1


def cut_patches(images: jax.Array, size: int, stride: int) -> jax.Array:
  """[B, H, W, C] -> [B, gh, gw, size, size, C], patch (i, j) starting at pixel
  (i stride, j stride)."""
  gh, gw = (grid_shape(n, size, stride) for n in images.shape[1:3])
  rows = [images[:, i * stride:i * stride + size] for i in range(gh)]
  grid = [[row[:, :, j * stride:j * stride + size] for j in range(gw)] for row in rows]
  return jnp.stack([jnp.stack(row, axis=1) for row in grid], axis=1)


class PatchEncoder(nn.Module):
  """``backbone`` on every patch of the grid; see the module docstring.

  ``augment``: a function of the patches [B, gh, gw, size, size, C] applied before
  they are encoded (CPC's per-patch augmentations; training only)."""
  backbone: nn.Module
  size: int
  stride: int

  def setup(self):
    nn.share_scope(self, self.backbone)

  def __call__(self, images: jax.Array, train: bool, grid: bool = False,
               augment: Optional[Callable[[jax.Array], jax.Array]] = None) -> jax.Array:
    patches = cut_patches(images, self.size, self.stride)
    if augment is not None:
      patches = augment(patches)
    b, gh, gw = patches.shape[:3]
    h = self.backbone(patches.reshape(b * gh * gw, *patches.shape[3:]), train=train)
    h = h.reshape(b, gh, gw, h.shape[-1])
    return h if grid else h.mean(axis=(1, 2))
