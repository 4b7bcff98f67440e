"""Methods by name. Adding one: a file here defining ``METHODS``, a config, a test file.

Each method module exports ``METHODS = {"name": MethodClass, ...}``; this package
collects them, so a new method touches no shared file.
"""

import importlib
import pkgutil

import ml_collections

from cvrl_jax.methods.base import Method


def available() -> dict[str, type[Method]]:
  """Every method of every module in this package, by its config name."""
  found = {}
  for info in pkgutil.iter_modules(__path__):
    module = importlib.import_module(f"{__name__}.{info.name}")
    found.update(getattr(module, "METHODS", {}))
  return found


def get_method(config: ml_collections.ConfigDict, num_classes: int,
               total_steps: int) -> Method:
  known = available()
  if config.method not in known:
    raise ValueError(f"config.method={config.method!r} is not one of {sorted(known)}.")
  return known[config.method](config, num_classes, total_steps)
