"""Methods by name. Adding one: a file here defining ``METHODS``, a config, a test file.

Each method module exports ``METHODS = {"name": MethodClass, ...}``; this package
collects them, so a new method touches no shared file. No method module imports
another: what they share is in ``base.py``, their losses in ``cvrl_jax/losses.py``.
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


def method_class(name: str) -> type[Method]:
  """The class of ``config.method=name``, or an error listing the methods."""
  known = available()
  if name not in known:
    raise ValueError(f"config.method={name!r} is not one of {sorted(known)}.")
  return known[name]


def get_method(config: ml_collections.ConfigDict, num_classes: int,
               total_steps: int) -> Method:
  return method_class(config.method)(config, num_classes, total_steps)
