"""CPC v2 (Hénaff et al. 2019/2020, "Data-Efficient Image Recognition with
Contrastive Predictive Coding").

The definitions used here:

* Patches: each image is cut into a grid of overlapping square patches
  (``model.patch_grid`` = (size, stride); ImageNet: 64 px every 32 px on a 256 px
  image, a 7 x 7 grid; CIFAR-10 here: 8 px every 4 px on 32 px, also 7 x 7), and
  each patch is encoded alone by the ResNet into one vector z_{i,j}
  (``models.PatchEncoder``: the encoder returns the grid [B, gh, gw, D] to this
  method, the mean over the grid to everything else).
* No BatchNorm: the ResNet normalises with LayerNorm (``model.norm="layer"``,
  per patch over (H, W, C)); the paper finds that BatchNorm's statistics, shared
  by the patches of a batch, let the encoder pass information between patches
  around the receptive field the task relies on.
* Context network (``MaskedContext``): residual blocks over the grid of z, each
  LayerNorm (per grid position, over channels) -> 1x1 conv to
  ``cpc.context_width`` -> ReLU -> a 2 x 3 conv over rows i - 1 and i only
  (the grid padded by one row on top) -> ReLU -> 1x1 conv back; ``cpc.context_blocks``
  of them. So c_{i,j} sees the rows <= i and nothing below (tested), and its
  receptive field grows by one row and one column each way per block. The
  paper's appendix A.2 has 5 such blocks of width 256 (a 1 x 3 and a 2 x 1 conv
  where this has one 2 x 3; no LayerNorm in them).
* Predictions and loss: targets t_{i,j} = linear(z_{i,j}) of ``cpc.target_dim``
  = 64, predictions p^k_{i,j} = ``cpc.emb_scale`` (0.1) x W_k c_{i,j} for each
  k in ``cpc.offsets`` = (3, 4, 5) rows below (the appendix's pseudo-code:
  steps_to_ignore 2, steps_to_predict 3, as public reimplementations carry it:
  with patches at half their size apart, the two nearest rows share pixels with
  the context, so they are not predicted). ``losses.cpc_infonce``: for each k,
  the cross-entropy of p^k_{b,i,j} . t_l over every patch l of every image of
  the global batch, the positive being t_{b,i+k,j}; the sum over k of the means.
* Patch-wise augmentations (``augment_patches``), drawn per patch in the step
  from the step's RNG folded with the image's row in the global batch (so the
  same on 1 device and 8): a horizontal flip (``cpc.flip_p``), colour dropping
  (``cpc.color_drop_p``: two of the three channels set to 0, the one kept drawn
  at random) and spatial jitter (``cpc.jitter`` = J: a random window of size -
  J px of the patch kept, the rest set to 0, as the 60 of 64 px of public
  reimplementations). The paper also uses other augmentations (its section 4);
  they are not here. The host pipeline gives one crop of each image
  (``num_views=1``), flipped, without colour ops.

Not here: the paper's predictions from the other directions (bottom-up, and
in its final model also left-right) and its ResNet-161; the ``imagenet`` preset
trains a ResNet-50 from top to bottom only.

The representation evaluated downstream (kNN monitor, linear probe,
fine-tuning, export) is the encoder's: patches encoded, then averaged over the
grid (``base.Method.features``). Export to torchvision (``.pt``) is refused:
its ResNets have BatchNorm, and the patch grid is not part of a torchvision
model (``tools/export.py``); ``.npz`` / ``.safetensors`` hold it.
"""

import functools
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cvrl_jax import losses, models, parallel
from cvrl_jax.models.patches import grid_shape
from cvrl_jax.methods import base


def augment_patches(patches: jax.Array, rng: jax.Array, rows: jax.Array, *, flip_p: float,
                    color_drop_p: float, jitter: int) -> jax.Array:
  """The per-patch augmentations above on [n, gh, gw, s, s, C] patches of the
  images at ``rows`` of the global batch; each image's draws keyed by its row."""
  size, channels = patches.shape[3], patches.shape[-1]

  def one_image(key, x):
    k_flip, k_drop, k_channel, k_jitter = jax.random.split(key, 4)
    grid = x.shape[:2]
    flip = jax.random.bernoulli(k_flip, flip_p, grid)[..., None, None, None]
    x = jnp.where(flip, x[:, :, :, ::-1], x)
    keep = jax.nn.one_hot(jax.random.randint(k_channel, grid, 0, channels), channels)
    drop = jax.random.bernoulli(k_drop, color_drop_p, grid)[..., None]
    x = x * jnp.where(drop, keep, 1.0)[:, :, None, None, :].astype(x.dtype)
    start = jax.random.randint(k_jitter, (*grid, 2), 0, jitter + 1)
    pixel = jnp.arange(size)
    inside = lambda s: (pixel >= s[..., None]) & (pixel < s[..., None] + size - jitter)
    window = inside(start[..., 0])[..., :, None] & inside(start[..., 1])[..., None, :]
    return x * window[..., None].astype(x.dtype)

  keys = jax.vmap(lambda row: jax.random.fold_in(rng, row))(rows)
  return jax.vmap(one_image)(keys, patches)


class MaskedContext(nn.Module):
  """The context network above: [B, gh, gw, D] -> [B, gh, gw, D], c_{i,j} a
  function of the rows <= i."""
  blocks: int
  width: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    c = z
    for i in range(self.blocks):
      y = nn.relu(nn.Dense(self.width, name=f"in_{i}")(nn.LayerNorm(name=f"norm_{i}")(c)))
      y = jnp.pad(y, ((0, 0), (1, 0), (1, 1), (0, 0)))  # one row above, a column each side
      y = nn.relu(nn.Conv(self.width, (2, 3), padding="VALID", name=f"masked_{i}")(y))
      c = c + nn.Dense(z.shape[-1], name=f"out_{i}")(y)
    return c


class CPCNet(nn.Module):
  """Patch encoder -> context network -> targets and one prediction per offset,
  plus the online probe on the stop-gradient pooled patch features.

  Returns (the grid of patch features z, the targets t, [p^k for each offset],
  the probe's logits or None)."""
  encoder: nn.Module
  context: nn.Module
  target_dim: int
  num_offsets: int
  num_classes: int = 0

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = True,
               augment: Optional[Callable[[jax.Array], jax.Array]] = None):
    z = self.encoder(images, train=train, grid=True, augment=augment)
    # No bias: one added to every candidate shifts an anchor's logits alike, so its
    # gradient is 0 but for rounding, which Adam would amplify into steps.
    targets = nn.Dense(self.target_dim, use_bias=False, name="target")(z)
    predictions = nn.Dense(self.num_offsets * self.target_dim, name="predict")(self.context(z))
    logits = (nn.Dense(self.num_classes, name=base.PROBE)(lax.stop_gradient(z.mean(axis=(1, 2))))
              if self.num_classes else None)
    return z, targets, jnp.split(predictions, self.num_offsets, axis=-1), logits


def check_offsets(offsets: Sequence[int], grid_rows: int) -> None:
  """Refuses an offset that leaves no anchor row in a grid of ``grid_rows`` rows."""
  bad = [k for k in offsets if not 0 < k < grid_rows]
  if not offsets or bad:
    raise ValueError(f"cpc.offsets={tuple(offsets)}: each must be in 1..{grid_rows - 1} "
                     f"for a grid of {grid_rows} rows of patches.")


class CPC(base.Method):
  defaults = {"cpc": dict(offsets=(3, 4, 5), target_dim=64, emb_scale=0.1,
                          context_blocks=5, context_width=256,
                          flip_p=0.5, color_drop_p=1.0, jitter=4)}

  def __init__(self, config, num_classes, total_steps):
    super().__init__(config, num_classes, total_steps)
    size, stride = config.model.patch_grid
    if not size:
      raise ValueError("CPC encodes a grid of patches: set --config.model.patch_grid="
                       "'(SIZE,STRIDE)' (configs/cpc.py does, e.g. (64,32) at 256 px).")
    base.require_one_view(config, "CPC")
    if not 0 <= config.cpc.jitter < size:
      raise ValueError(f"cpc.jitter={config.cpc.jitter} must be in 0..{size - 1} px.")
    check_offsets(config.cpc.offsets, grid_shape(config.image_size, size, stride))

  def net(self, axis_name):
    c = self.config
    return CPCNet(models.make_encoder(c.model, axis_name),
                  MaskedContext(c.cpc.context_blocks, c.cpc.context_width),
                  c.cpc.target_dim, len(c.cpc.offsets), self.num_classes)

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del step
    s = self.config.cpc
    (images,) = batch["views"]
    rows = parallel.first_row(images.shape[0], axis_name) + jnp.arange(images.shape[0])
    augment = functools.partial(augment_patches, rng=rng, rows=rows, flip_p=s.flip_p,
                                color_drop_p=s.color_drop_p, jitter=s.jitter)
    (_, targets, predictions, logits), updates = self.net(axis_name).apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True, augment=augment,
        mutable=["batch_stats"])
    loss = losses.cpc_infonce([s.emb_scale * p for p in predictions], targets,
                              offsets=s.offsets, axis_name=axis_name)
    return base.with_probe(parallel.pmean(loss, axis_name), logits, batch["label"], axis_name,
                           updates.get("batch_stats", {}), extra)


METHODS = {"cpc": CPC}
