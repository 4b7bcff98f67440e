"""Methods by name. Adding one: a file here, a config, a test file."""

import ml_collections

from cvrl_jax.methods.base import Method
from cvrl_jax.methods.moco import MoCo, MoCoV3
from cvrl_jax.methods.simclr import SimCLR

METHODS = {"simclr": SimCLR, "moco": MoCo, "moco_v3": MoCoV3}


def get_method(config: ml_collections.ConfigDict, num_classes: int,
               total_steps: int) -> Method:
  if config.method not in METHODS:
    raise ValueError(f"config.method={config.method!r} is not one of {sorted(METHODS)}.")
  return METHODS[config.method](config, num_classes, total_steps)
