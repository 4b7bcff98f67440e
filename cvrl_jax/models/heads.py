"""Heads on top of the encoder: MLP projection / prediction heads."""

from typing import Optional, Sequence

import flax.linen as nn
import jax


class MLPHead(nn.Module):
  """Dense layers, each followed by BatchNorm; ReLU between them, none after the last.

  SimCLR's projection head (2 layers in v1, 3 in v2), MoCo v2's 2-layer head (no
  BN: ``use_bn=False``), MoCo v3 / BYOL projectors and predictors. The last BN has
  no learned offset, as in SimCLR. BatchNorm is cross-replica when ``axis_name``
  is set, like the encoder's.

  Returns the output and the list of activations [input, after layer 1, ...]:
  SimCLR v2 fine-tunes from the first hidden layer. ``hidden_only``: every layer
  is a hidden one (BN with offset, ReLU), as the first layers of a longer head
  are (an evaluation's ``Classifier`` keeps those of a pre-trained head).
  """
  dims: Sequence[int]
  use_bn: bool = True
  last_bn: bool = True
  axis_name: Optional[str] = None
  bn_momentum: float = 0.9
  hidden_only: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, list[jax.Array]]:
    hiddens = [x]
    for i, dim in enumerate(self.dims):
      last = i == len(self.dims) - 1 and not self.hidden_only
      bn = self.use_bn and (self.last_bn or not last)
      x = nn.Dense(dim, use_bias=not bn, name=f"dense_{i}")(x)
      if bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         use_bias=not last, axis_name=self.axis_name if train else None,
                         name=f"bn_{i}")(x)
      if not last:
        x = nn.relu(x)
      hiddens.append(x)
    return x, hiddens
