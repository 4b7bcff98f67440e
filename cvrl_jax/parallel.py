"""One data-parallel device mesh, moving host batches onto it, and the collectives.

Every train step runs under ``jax.shard_map`` over a 1-D mesh named ``data`` that
spans all devices of all processes: parameters are replicated, the global batch is
split along its first axis. Per-device code (global losses, cross-replica
BatchNorm, MoCo's ShuffleBN) names the axis ``DATA``.

The collectives at the end (``gather``, ``pmean``, ``psum``, ``own_rows``) take
``axis_name=None`` to mean "one device holding the whole batch", so losses and
methods are written once for both cases.
"""

import glob
import importlib.util
import itertools
import os
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P
from orbax.checkpoint import multihost

DATA = "data"

# Explicit multi-process settings, read by ``initialize_distributed`` (JAX itself
# reads the first; the other two are this library's, named alike).
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"   # host:port of process 0
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"


def _on_tpu_host() -> bool:
  """A Cloud TPU VM (any worker of a slice): TPU chips as device files, and libtpu."""
  chips = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  return bool(chips) and importlib.util.find_spec("libtpu") is not None


# A process whose peer has sent no heartbeat for this long ends (JAX's default: 100 s).
# Long enough for any compile or checkpoint (heartbeats come from a thread of their
# own), short enough that a dead host does not hold a pod slice for minutes.
HEARTBEAT_TIMEOUT_S = 60


def initialize_distributed(environ: Optional[Mapping[str, str]] = None,
                           on_tpu_host: Optional[bool] = None) -> bool:
  """Joins a multi-process run before JAX's first use; returns whether it joined.

  * Explicit: ``JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=N
    JAX_PROCESS_ID=i`` on every process (CPU or GPU clusters, the 2-process CPU
    test). With ``JAX_NUM_PROCESSES=1`` nothing is joined.
  * Cloud TPU VM: JAX reads the slice's workers from the VM metadata, so every
    worker of a pod slice runs the same command with no settings.
  * Otherwise (a laptop, one GPU box): a single process, nothing to do.
  """
  env = os.environ if environ is None else environ
  explicit = {k: env.get(k) for k in (COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV)}
  if any(explicit.values()):
    missing = [k for k, v in explicit.items() if not v]
    if missing:
      raise ValueError(f"Multi-process settings incomplete: {', '.join(missing)} unset. "
                       f"Set all of {', '.join(explicit)} on every process.")
    num_processes = int(explicit[NUM_PROCESSES_ENV])
    if num_processes == 1:
      return False
    jax.distributed.initialize(coordinator_address=explicit[COORDINATOR_ENV],
                               num_processes=num_processes,
                               process_id=int(explicit[PROCESS_ID_ENV]),
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
  elif _on_tpu_host() if on_tpu_host is None else on_tpu_host:
    jax.distributed.initialize(heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
  else:
    return False
  logging.warning(
      "Joined a %d-process run as process %d. If a process dies, the others stop "
      "within %d s (JAX: 'another task died'): then start every process again with the "
      "same command, and the run resumes from its latest checkpoint.",
      jax.process_count(), jax.process_index(), HEARTBEAT_TIMEOUT_S)
  return True


# How long a process waits at ``wait_for_all_processes`` for the slowest one.
BARRIER_TIMEOUT_S = 1800
# Barrier names must not repeat; every process calls in the same order.
_barrier_count = itertools.count()


def wait_for_all_processes(name: str, timeout_s: int = BARRIER_TIMEOUT_S) -> None:
  """Blocks until every process has called this with ``name``; no-op with one process.

  Called before a run's first collective between processes. Gloo (the CPU
  collectives) gives that first collective a fixed 30 s to connect every pair of
  processes, and processes that compiled at different speeds (a loaded machine, a
  slower host) miss it. This barrier is the coordination service's, not a collective:
  it waits ``timeout_s``, and a peer that dies meanwhile still ends it through the
  heartbeat.
  """
  multihost.get_barrier_sync_fn()(key=f"{name}_{next(_barrier_count)}",
                                  timeout_ms=timeout_s * 1000)


def first_run_together(jitted: Callable) -> Callable:
  """``jitted``, but with several processes each new input signature is compiled,
  then every process waits for the others (``wait_for_all_processes``), then it runs.

  Compiling a train step takes each process its own time; the step's first
  collective would otherwise start the gloo clock on the fastest one.
  """
  if jax.process_count() == 1:
    return jitted
  compiled = {}

  def call(*args):
    leaves, treedef = jax.tree.flatten(args)
    key = (treedef, tuple((x.shape, x.dtype, getattr(x, "sharding", None)) for x in leaves))
    if key not in compiled:
      compiled[key] = jitted.lower(*args).compile()
      wait_for_all_processes("cvrl_jax_compiled")
    return compiled[key](*args)
  return call


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


def gather(x: jax.Array, axis_name: Optional[str], *, invariant: bool = False) -> jax.Array:
  """The global batch: every device's rows in axis order (``x`` itself on one device).

  ``invariant=False`` keeps the result device-varying, so gradients flow back
  to every device's rows (negatives of a global loss). ``invariant=True`` gives
  one value replicated on every device, for state all devices keep alike
  (queues, ShuffleBN's permuted batch).
  """
  if axis_name is None:
    return x
  if invariant:
    return lax.all_gather(x, axis_name, tiled=True, to="invarying")
  return lax.all_gather(x, axis_name, tiled=True)


def pmean(x: Any, axis_name: Optional[str]) -> Any:
  """Mean over the mesh axis, or ``x`` itself on one device."""
  return x if axis_name is None else lax.pmean(x, axis_name)


def psum(x: Any, axis_name: Optional[str]) -> Any:
  """Sum over the mesh axis, or ``x`` itself on one device."""
  return x if axis_name is None else lax.psum(x, axis_name)


def axis_size(axis_name: Optional[str]) -> int:
  """Devices along the mesh axis (1 without one)."""
  return 1 if axis_name is None else lax.axis_size(axis_name)


def first_row(n: int, axis_name: Optional[str]) -> jax.Array:
  """Index of this device's first row in the gathered global batch of ``n`` rows each."""
  if axis_name is None:
    return jnp.zeros((), jnp.int32)
  return lax.axis_index(axis_name) * n


def own_rows(x: jax.Array, n: int, axis_name: Optional[str]) -> jax.Array:
  """This device's ``n`` rows of a global batch ``x``."""
  if axis_name is None:
    return x
  return lax.dynamic_slice_in_dim(x, lax.axis_index(axis_name) * n, n)
