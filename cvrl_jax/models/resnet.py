"""ResNet encoders (v1.5, optional SimCLR v2 selective kernels) in Flax linen.

What this follows
-----------------
* Architecture: "Deep Residual Learning for Image Recognition" (He et al., 2016)
  in the "v1.5" variant used by torchvision and by SimCLR: in bottleneck blocks
  the stride sits on the 3x3 conv, not on the first 1x1. With ``sk_ratio == 0``
  the parameter count matches torchvision exactly (ResNet-50 without the fc
  layer: 23,508,032; ResNet-18: 11,176,512).
* Padding is explicit and symmetric (``k // 2`` on each side), like torchvision
  and like SimCLR's ``conv2d_fixed_padding`` for odd kernels; flax's ``"SAME"``
  would pad asymmetrically for strided convs on even inputs.
* Initialisation: convs use He / Kaiming init with ``fan_out`` and an
  untruncated normal distribution (``variance_scaling(2.0, "fan_out",
  "normal")``, as torchvision's ``kaiming_normal_(mode="fan_out")``). Convs have
  no bias since every conv is followed by BatchNorm. The last BN of every
  residual block has its scale (gamma) initialised to zero, so each block starts
  as the identity on its residual path (Goyal et al., 2017; SimCLR does this).
* Selective kernels (``sk_ratio > 0``): SimCLR v2 (Chen et al., 2020, "Big
  Self-Supervised Models are Strong Semi-Supervised Learners") and its TF
  reference code (``sk_conv2d``): one 3x3 conv with ``2 * filters`` outputs,
  BN + ReLU, split into two paths; the sum of the paths is globally average
  pooled, goes through a 1x1 conv to ``max(int(filters * sk_ratio), 32)``
  channels + BN + ReLU, then a 1x1 conv to ``2 * filters`` channels, split
  into two per-path logits, softmaxed over the 2 paths; output = weighted sum
  of the paths. The SK conv replaces "3x3 conv + BN + ReLU" (no extra BN after
  it) - the bottleneck's middle conv; for basic blocks (ResNet-18/34, where
  SimCLR v2 has no SK) the first 3x3 conv.
  As in SimCLR v2, SK models also use the ResNet-D tweaks (Bag of Tricks, He
  et al., 2019): projection shortcuts are ``2x2 avg-pool -> 1x1 conv (stride
  1) -> BN`` (for strided blocks the pool has stride 2 and zero-pads
  bottom/right; for the unstrided first bottleneck stage it is a 2x2/1 pool),
  and the ImageNet stem is the "deep stem": three 3x3 convs with ``w/2, w/2,
  w`` channels (the first strided) + max-pool. The CIFAR stem is unchanged.
  Param counts then match SimCLR v2's: R50-SK 35M, R152-3x-SK 795M.
  The 3x3/2 stem max-pool pads symmetrically (torchvision) rather than TF's
  "SAME" bottom/right padding.
* BatchNorm: flax momentum convention (``running = m * running + (1 - m) *
  batch``), ``m = 0.9`` by default like SimCLR's decay 0.9. When training with
  ``axis_name`` set, batch statistics are averaged over that mapped axis
  (cross-replica / global BN); at eval the running averages are used and no
  collective is issued.
* ``norm="layer"`` (CPC v2, whose paper finds that BatchNorm lets a patch
  encoder cheat through the statistics it shares across patches): every
  BatchNorm becomes a LayerNorm over each sample's (H, W, C) with a per-channel
  scale and bias (zero-initialised scale where the BN's was), under the BN's
  name (``bn1``, ``proj_bn``, ...), so the parameter tree keeps its names and
  has no ``batch_stats``. The default ``"batch"`` is the network above, unchanged.
* 1x1 convolutions run as matrix products on a CPU (``pointwise_conv``), where
  XLA's own 1x1 convolutions are 1.8-2.3x slower; same parameters, same maths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

__all__ = [
  "ResNet",
  "BasicBlock",
  "BottleneckBlock",
  "SelectiveKernelConv",
  "resnet",
  "feature_dim",
  "stage_widths",
  "STAGE_SIZES",
]

# depth -> (blocks per stage, uses bottleneck blocks)
STAGE_SIZES: dict[int, tuple[tuple[int, ...], bool]] = {
  18: ((2, 2, 2, 2), False),
  34: ((3, 4, 6, 3), False),
  50: ((3, 4, 6, 3), True),
  101: ((3, 4, 23, 3), True),
  152: ((3, 8, 36, 3), True),
  200: ((3, 24, 36, 3), True),
}

# He init, fan_out, untruncated normal (torchvision's kaiming_normal_ fan_out).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _check_depth(depth: int) -> tuple[tuple[int, ...], bool]:
  if depth not in STAGE_SIZES:
    raise ValueError(f"Unsupported ResNet depth {depth}; choose one of {sorted(STAGE_SIZES)}.")
  return STAGE_SIZES[depth]


def _channels(base: int, width_multiplier: float) -> int:
  c = int(base * width_multiplier)
  if c < 1:
    raise ValueError(f"width_multiplier {width_multiplier} gives no channels.")
  return c


def stage_widths(width_multiplier: float = 1) -> tuple[int, int, int, int, int]:
  """Channels of the stem and of each stage's 3x3 convs (a bottleneck block outputs
  4x its stage's), for ports of this ResNet to other frameworks (tools/export.py)."""
  return tuple(_channels(base, width_multiplier) for base in (64, 64, 128, 256, 512))


def feature_dim(depth: int, width_multiplier: float = 1) -> int:
  """Channels of the pooled ResNet output: 512*w for 18/34, 2048*w for 50+."""
  _, bottleneck = _check_depth(depth)
  return (4 if bottleneck else 1) * _channels(512, width_multiplier)


def _strided_matmul(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
  """An unpadded 1x1 conv (NHWC input, HWIO kernel) as subsampling + matrix product."""
  sh, sw = strides
  return jnp.einsum("nhwc,cd->nhwd", x[:, ::sh, ::sw, :], kernel[0, 0])


def pointwise_conv(x: jax.Array, kernel: jax.Array, window_strides: Sequence[int],
                   padding: Any, **kwargs: Any) -> jax.Array:
  """flax's ``conv_general_dilated`` for the ResNet's unpadded 1x1 convs.

  On a CPU this is a matrix product: XLA's CPU 1x1 convolutions of a ResNet-50
  take 1.8-2.3x the time of the same products, forward and backward together, and
  its step runs 12-31% faster this way (docs/benchmarks.md). GPU and TPU keep the
  convolution: ``lax.platform_dependent`` picks the branch when the step is
  lowered, so a step compiled for them does not contain the matrix product.
  """
  def conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, window_strides, padding, **kwargs)

  return lax.platform_dependent(
      x, kernel, cpu=lambda x, k: _strided_matmul(x, k, window_strides), default=conv)


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str | None = None):
  pad = kernel // 2
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    kernel_init=conv_init,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
    conv_general_dilated=pointwise_conv if kernel == 1 else None,
  )


def _bn(m: nn.Module, train: bool, zero_init: bool = False, name: str | None = None):
  """BatchNorm configured from module ``m``'s bn_momentum/bn_epsilon/axis_name/dtype,
  or (``m.norm == "layer"``) a LayerNorm over each sample's (H, W, C).

  Cross-replica statistics (``axis_name``) only in training; eval uses the
  running averages. ``zero_init`` sets gamma to 0 (last BN of a block).
  """
  scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
  if m.norm == "layer":
    return nn.LayerNorm(epsilon=m.bn_epsilon, reduction_axes=(-3, -2, -1), feature_axes=-1,
                        dtype=m.dtype, param_dtype=jnp.float32, scale_init=scale_init,
                        name=name)
  if m.norm != "batch":
    raise ValueError(f"ResNet norm={m.norm!r}: use 'batch' or 'layer'.")
  return nn.BatchNorm(
    use_running_average=not train,
    axis_name=m.axis_name if train else None,
    momentum=m.bn_momentum,
    epsilon=m.bn_epsilon,
    dtype=m.dtype,
    param_dtype=jnp.float32,
    scale_init=scale_init,
    name=name,
  )


class _Settings(nn.Module):
  """What the ResNet passes on to every unit it builds: selective kernels, and the
  BatchNorm and compute settings (``_bn`` reads them)."""

  sk_ratio: float = 0.0
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  axis_name: str | None = None
  dtype: Any = jnp.float32
  norm: str = "batch"  # or "layer" (CPC v2): see the module docstring

  def settings(self) -> dict[str, Any]:
    return dict(sk_ratio=self.sk_ratio, bn_momentum=self.bn_momentum,
                bn_epsilon=self.bn_epsilon, axis_name=self.axis_name, dtype=self.dtype,
                norm=self.norm)


class _Unit(_Settings):
  """A residual block or a selective-kernel conv: output width and stride."""

  filters: int = 64
  strides: int = 1


class SelectiveKernelConv(_Unit):
  """SimCLR v2 selective-kernel conv replacing a 3x3 conv (+BN+ReLU).

  Outputs ``filters`` channels. Ends with the BN+ReLU of its two paths (as
  SimCLR v2's ``sk_conv2d``), so callers add no BN/ReLU after it.
  """

  min_dim: int = 32

  @nn.compact
  def __call__(self, x, train: bool):
    # Two streams from a single conv with 2x outputs, split along channels.
    x = _conv(2 * self.filters, 3, self.strides, self.dtype, name="conv")(x)
    x = nn.relu(_bn(self, train, name="bn")(x))
    paths = jnp.stack(jnp.split(x, 2, axis=-1), axis=0)  # [2, N, H, W, C]

    # Mixing weights from globally pooled features.
    mid = max(int(self.filters * self.sk_ratio), self.min_dim)
    g = jnp.mean(paths.sum(axis=0).astype(jnp.float32), axis=(1, 2), keepdims=True)  # [N, 1, 1, C]
    g = _conv(mid, 1, 1, self.dtype, name="fc")(g)
    g = nn.relu(_bn(self, train, name="fc_bn")(g))
    logits = _conv(2 * self.filters, 1, 1, self.dtype, name="attn")(g)
    logits = jnp.stack(jnp.split(logits, 2, axis=-1), axis=0)  # [2,N,1,1,C]
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=0)
    return (paths * weights.astype(paths.dtype)).sum(axis=0)


class _BlockBase(_Unit):
  """A residual block: ``relu(branch(x) + shortcut(x))``; subclasses define the branch
  (ending in a BN whose scale starts at 0) and its ``expansion``. ``filters`` is
  the 3x3 conv's width; the block outputs ``expansion * filters`` channels."""

  def conv3x3_bn_relu(self, x, strides: int, train: bool, conv_name: str, bn_name: str):
    """3x3 conv + BN + ReLU, or a selective-kernel conv when ``sk_ratio > 0``.

    The SK conv already ends in BN + ReLU (on its two paths) and, as in
    SimCLR v2, gets no further BN/ReLU: its params live under ``conv_name``
    and there is no ``bn_name`` entry.
    """
    if self.sk_ratio > 0:
      return SelectiveKernelConv(filters=self.filters, strides=strides, name=conv_name,
                                 **self.settings())(x, train)
    x = _conv(self.filters, 3, strides, self.dtype, name=conv_name)(x)
    return nn.relu(_bn(self, train, name=bn_name)(x))

  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    residual = self.shortcut(x, self.expansion * self.filters, train)
    return nn.relu(self.branch(x, train) + residual)

  def branch(self, x, train: bool):
    raise NotImplementedError

  def shortcut(self, x, out_features: int, train: bool):
    """Identity, or projection (1x1 conv + BN) when shape changes."""
    if x.shape[-1] == out_features and self.strides == 1:
      return x
    s = self.strides
    if self.sk_ratio > 0:
      # ResNet-D shortcut as in SimCLR v2's SK models: 2x2 average pool,
      # then an unstrided 1x1 conv. Strided: zero-pad bottom/right by 1 and
      # pool 2x2/s "VALID"; unstrided (first bottleneck stage): 2x2/1 pool
      # with TF-"SAME" padding (bottom/right, padding not counted).
      if s > 1:
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        x = nn.avg_pool(x, (2, 2), strides=(s, s), padding="VALID")
      else:
        x = nn.avg_pool(
          x, (2, 2), strides=(1, 1), padding=((0, 1), (0, 1)), count_include_pad=False
        )
      s = 1
    x = _conv(out_features, 1, s, self.dtype, name="proj_conv")(x)
    return _bn(self, train, name="proj_bn")(x)


class BasicBlock(_BlockBase):
  """Two 3x3 convs (ResNet-18/34). Output channels = ``filters``."""

  expansion = 1

  def branch(self, x, train: bool):
    y = self.conv3x3_bn_relu(x, self.strides, train, "conv1", "bn1")
    y = _conv(self.filters, 3, 1, self.dtype, name="conv2")(y)
    return _bn(self, train, zero_init=True, name="bn2")(y)


class BottleneckBlock(_BlockBase):
  """1x1 -> 3x3 (strided, v1.5) -> 1x1 (x4). Output channels = ``4*filters``."""

  expansion = 4

  def branch(self, x, train: bool):
    y = _conv(self.filters, 1, 1, self.dtype, name="conv1")(x)
    y = nn.relu(_bn(self, train, name="bn1")(y))
    y = self.conv3x3_bn_relu(y, self.strides, train, "conv2", "bn2")
    y = _conv(self.expansion * self.filters, 1, 1, self.dtype, name="conv3")(y)
    return _bn(self, train, zero_init=True, name="bn3")(y)


class ResNet(_Settings):
  """ResNet encoder returning globally average-pooled features ``[N, C]`` (float32).

  ``C == feature_dim(depth, width_multiplier)``. Variables: ``params`` (always
  float32) and ``batch_stats``. Call with ``mutable=["batch_stats"]`` when
  ``train=True``. With ``axis_name`` set, ``train=True`` must run inside a
  mapped axis of that name (``shard_map``/``pmap``); ``init`` and
  ``train=False`` do not need it.

  Parameter names: ``stem_conv``/``stem_bn`` (deep stem: ``stem_conv1..3``,
  ``stem_bn1..2``, ``stem_bn``), then ``stage{s}_block{i}`` (1-based) with
  ``conv1``/``bn1``, ``conv2``/``bn2`` (``conv3``/``bn3`` for bottlenecks) and
  ``proj_conv``/``proj_bn`` on projection shortcuts; an SK conv is a
  submodule ``conv``/``bn``/``fc``/``fc_bn``/``attn`` under the conv's name.
  Conv weights are ``kernel`` (no conv has a bias); BN params are
  ``scale``/``bias`` (e.g. for weight-decay masks).
  """

  depth: int = 50
  width_multiplier: int | float = 1
  stem: str = "imagenet"
  remat: bool = False  # (and _Settings' sk_ratio, BatchNorm settings, dtype)

  @nn.compact
  def __call__(self, x, train: bool) -> jax.Array:
    stage_sizes, bottleneck = _check_depth(self.depth)
    w = self.width_multiplier
    x = jnp.asarray(x, self.dtype)

    # ---- stem
    stem_width = _channels(64, w)
    if self.stem == "imagenet":
      if self.sk_ratio > 0:
        # ResNet-D deep stem, as SimCLR v2 with SK.
        half = max(stem_width // 2, 1)
        x = _conv(half, 3, 2, self.dtype, name="stem_conv1")(x)
        x = nn.relu(_bn(self, train, name="stem_bn1")(x))
        x = _conv(half, 3, 1, self.dtype, name="stem_conv2")(x)
        x = nn.relu(_bn(self, train, name="stem_bn2")(x))
        x = _conv(stem_width, 3, 1, self.dtype, name="stem_conv3")(x)
      else:
        x = _conv(stem_width, 7, 2, self.dtype, name="stem_conv")(x)
      x = nn.relu(_bn(self, train, name="stem_bn")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == "cifar":
      x = _conv(stem_width, 3, 1, self.dtype, name="stem_conv")(x)
      x = nn.relu(_bn(self, train, name="stem_bn")(x))
    else:
      raise ValueError(f"Unknown stem {self.stem!r}; use 'imagenet' or 'cifar'.")

    # ---- residual stages
    block_cls = BottleneckBlock if bottleneck else BasicBlock
    if self.remat:
      # static_argnums counts `self` as 0: (self, x, train) -> train is 2.
      block_cls = nn.remat(block_cls, static_argnums=(2,))
    for stage, n_blocks in enumerate(stage_sizes):
      filters = _channels(64 * 2**stage, w)
      for i in range(n_blocks):
        strides = 2 if (i == 0 and stage > 0) else 1
        x = block_cls(filters=filters, strides=strides,
                      name=f"stage{stage + 1}_block{i + 1}", **self.settings())(x, train)

    # ---- global average pool (in float32), no classifier
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def resnet(depth: int = 50, **kw) -> ResNet:
  """Factory: ``resnet(50, width_multiplier=2, sk_ratio=0.0625)``."""
  _check_depth(depth)
  return ResNet(depth=depth, **kw)
