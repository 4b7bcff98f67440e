"""CMC's encoder: an RGB image split into the L and ab channels of CIE L*a*b*,
one ResNet per split (Tian, Krishnan & Isola 2019, "Contrastive Multiview Coding").

The pipeline's views are sRGB in [0, 1]; the conversion runs here, in JAX, on the
device, so every caller of the encoder (training, the kNN monitor, linear probe,
fine-tuning, export) feeds it the same RGB images as any other encoder.

``rgb_to_lab``: sRGB (D65) -> linear RGB -> CIE XYZ -> L*a*b* with the D65 white
point, the CIE formulas (what ``skimage.color.rgb2lab``, which the authors call on
uint8 images, computes). ``normalise_lab`` then maps each channel's range over
the sRGB gamut to [-1, 1], with the authors' constants (train_CMC.py): L in [0,
100], a in [-86.183, 98.233] (green to magenta), b in [-107.857, 94.478] (blue to
yellow).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

# Linear sRGB -> XYZ (IEC 61966-2-1, D65), rows X, Y, Z.
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423),
               (0.212671, 0.715160, 0.072169),
               (0.019334, 0.119193, 0.950227))
_D65_WHITE = (0.95047, 1.0, 1.08883)
# The range of L, a and b over the sRGB gamut (the authors' normalisation).
LAB_RANGE = ((0.0, 100.0), (-86.183, 98.233), (-107.857, 94.478))


def rgb_to_lab(rgb: jax.Array) -> jax.Array:
  """CIE L*a*b* (D65) of sRGB ``[..., 3]`` in [0, 1]: L in [0, 100], a and b
  roughly in [-110, 100]."""
  rgb = jnp.clip(rgb.astype(jnp.float32), 0.0, 1.0)
  linear = jnp.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
  xyz = linear @ jnp.asarray(_RGB_TO_XYZ).T / jnp.asarray(_D65_WHITE)
  # f(t) = t^(1/3) above (6/29)^3, else the linear piece that meets it there.
  delta = 6.0 / 29.0
  f = jnp.where(xyz > delta ** 3, jnp.cbrt(xyz), xyz / (3 * delta ** 2) + 4.0 / 29.0)
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def normalise_lab(lab: jax.Array) -> jax.Array:
  """Each channel's range over the sRGB gamut (``LAB_RANGE``) mapped to [-1, 1]."""
  low, high = jnp.asarray(LAB_RANGE).T
  return (lab - (low + high) / 2) / ((high - low) / 2)


class LabSplit(nn.Module):
  """``l`` on the L channel, ``ab`` on the a and b channels of the normalised
  L*a*b* image; returns their pooled features concatenated, [L's..., ab's...]
  (a CMC method splits them back in half: both encoders have the same width)."""
  l: nn.Module
  ab: nn.Module

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    lab = normalise_lab(rgb_to_lab(images))
    return jnp.concatenate([self.l(lab[..., :1], train=train),
                            self.ab(lab[..., 1:], train=train)], axis=-1)
