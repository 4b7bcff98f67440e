"""One data-parallel device mesh, and moving host batches onto it.

Every train step runs under ``jax.shard_map`` over a 1-D mesh named ``data`` that
spans all devices of all processes: parameters are replicated, the global batch is
split along its first axis. Per-device code (global losses, cross-replica
BatchNorm, MoCo's ShuffleBN) names the axis ``DATA``.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA = "data"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first ``num_devices`` devices (default: all of them)."""
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise ValueError(
          f"num_devices={num_devices} but only {len(devices)} devices are visible. "
          "On a CPU, simulate more with "
          "XLA_FLAGS=--xla_force_host_platform_device_count=N.")
    devices = devices[:num_devices]
  return jax.sharding.Mesh(np.asarray(devices), (DATA,),
                           axis_types=(jax.sharding.AxisType.Explicit,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh,
                     key: str = "batch_size") -> int:
  """Per-process batch size, or a clear error if the batch does not split evenly."""
  devices = mesh.devices.size
  if global_batch % devices:
    raise ValueError(
        f"{key}={global_batch} does not divide over {devices} devices: "
        f"use a multiple of {devices}, e.g. --config.{key}="
        f"{max(devices, global_batch // devices * devices)}.")
  return global_batch // jax.process_count()


def host_to_global(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Assembles each process's local batch (numpy) into one global sharded array."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), tree)
