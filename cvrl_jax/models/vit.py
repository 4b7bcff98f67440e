"""Vision Transformers (Dosovitskiy et al. 2021) as MoCo v3 trains them, in Flax linen.

What this follows (MoCo v3, Chen, Xie & He 2021, and its ``vits.py``):

* Pre-norm blocks: ``x + MHSA(LN(x))``, ``x + MLP(LN(x))``; LayerNorm epsilon
  1e-6, MLP ratio 4 with the exact (erf) GELU, biases on q, k, v. A class token
  whose output after the final LayerNorm is the representation, ``[N, width]``.
* Fixed 2-D sin-cos position embeddings, not learned (zero for the class token).
* Initialisation: every linear layer xavier-uniform with zero bias, q, k and v
  each as its own ``width x width`` matrix; the patch projection xavier-uniform
  over its ``(3 p^2, width)`` matrix; the class token N(0, 1e-6).
* ``frozen_patch_embed``: MoCo v3's fix for the instability of ViT training
  (its section 4.2, "random patch projection"): the patch projection keeps its
  random initialisation. ``stop_gradient`` gives it a zero gradient, and
  ``optim.create_optimizer`` drops its updates, since decoupled weight decay
  (AdamW) would otherwise still shrink it.

``VARIANTS``: ViT-S (MoCo v3 gives it 12 heads, where DeiT has 6) and ViT-B, both
with 16 x 16 patches in the papers. The model has no BatchNorm: it ignores
``axis_name`` and keeps no ``batch_stats``.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

VARIANTS = {
    "small": dict(width=384, depth=12, num_heads=12),
    "base": dict(width=768, depth=12, num_heads=12),
}

PATCH_EMBED = "patch_embed"  # module name of the patch projection (see optim.py)

_xavier = nn.initializers.xavier_uniform()


def sincos_2d(grid_size: tuple[int, int], width: int, temperature: float = 10_000.0
              ) -> np.ndarray:
  """Fixed position embeddings of a row-major patch grid, (rows * cols, width).

  Each quarter of the channels holds sin / cos of the row, then of the column
  index, at ``width / 4`` frequencies ``temperature ** -(i / (width / 4))``.
  """
  if width % 4:
    raise ValueError(f"ViT width {width} must be divisible by 4 for 2-D sin-cos "
                     "position embeddings.")
  rows, cols = np.meshgrid(np.arange(grid_size[0]), np.arange(grid_size[1]), indexing="ij")
  omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4))
  r = rows.reshape(-1, 1) * omega
  c = cols.reshape(-1, 1) * omega
  return np.concatenate([np.sin(r), np.cos(r), np.sin(c), np.cos(c)], axis=1).astype(np.float32)


class PatchEmbed(nn.Module):
  """Non-overlapping ``p x p`` patches, flattened and linearly projected."""
  width: int
  patch_size: int
  frozen: bool = False

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
    n, h, w, c = images.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f"Image size {h}x{w} is not a multiple of the patch size {p}.")
    kernel = self.param("kernel", _xavier, (p * p * c, self.width))
    bias = self.param("bias", nn.initializers.zeros, (self.width,))
    if self.frozen:
      kernel, bias = lax.stop_gradient(kernel), lax.stop_gradient(bias)
    patches = images.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(n, (h // p) * (w // p), p * p * c)
    return patches @ kernel + bias, (h // p, w // p)


class Block(nn.Module):
  """Pre-norm transformer block."""
  width: int
  num_heads: int
  mlp_ratio: int = 4
  dtype: jnp.dtype = jnp.float32  # compute dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm1")(x)
    x = x + nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, kernel_init=_xavier, dtype=self.dtype, name="attn")(y, y)
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm2")(x)
    y = nn.Dense(self.mlp_ratio * self.width, kernel_init=_xavier, dtype=self.dtype,
                 name="mlp_1")(y)
    y = nn.Dense(self.width, kernel_init=_xavier, dtype=self.dtype,
                 name="mlp_2")(nn.gelu(y, approximate=False))
    return x + y


class ViT(nn.Module):
  """Vision Transformer encoder returning the class token's features ``[N, width]``.

  ``dtype`` is the blocks' compute dtype (bfloat16 for mixed precision); the patch
  projection, the parameters and the returned features are float32. ``remat``
  recomputes each block's activations in the backward pass instead of storing them.
  """
  width: int = 384
  depth: int = 12
  num_heads: int = 12
  patch_size: int = 16
  mlp_ratio: int = 4
  frozen_patch_embed: bool = False
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    del train  # no dropout, no BatchNorm
    x, grid = PatchEmbed(self.width, self.patch_size, self.frozen_patch_embed,
                         name=PATCH_EMBED)(jnp.asarray(images, jnp.float32))
    x = x + sincos_2d(grid, self.width)
    cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, self.width))
    x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.width)), x], axis=1)
    block_cls = nn.remat(Block) if self.remat else Block
    x = x.astype(self.dtype)
    for i in range(self.depth):
      x = block_cls(self.width, self.num_heads, self.mlp_ratio, self.dtype,
                    name=f"block{i + 1}")(x)
    return nn.LayerNorm(epsilon=1e-6, name="norm")(x[:, 0].astype(jnp.float32))
