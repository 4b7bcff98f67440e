"""The pure-functional train step of every method: no TensorFlow, no file I/O.

Kept apart from ``train.py`` and ``loop.py`` (tf.data, checkpoints, writers) so that
it imports on any host with JAX alone, as the accelerator benchmarks do.
"""

from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics as clu_metrics
from jax.sharding import NamedSharding, PartitionSpec as P

from cvrl_jax import methods, parallel
from cvrl_jax.parallel import DATA


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  extra: Any  # the method's own state: momentum encoder, queue, centre, ...


def state_specs(method: methods.Method) -> TrainState:
  """How the state lies on the mesh: replicated, but for the parts of the method's
  extra state it shards (``Method.extra_specs``: InstDisc's memory bank)."""
  return TrainState(step=P(), params=P(), batch_stats=P(), opt_state=P(),
                    extra=method.extra_specs())


def create_train_state(method: methods.Method, tx: optax.GradientTransformation,
                       rng: jax.Array, image_shape: tuple[int, ...],
                       mesh: jax.sharding.Mesh) -> TrainState:
  """Initialises the state directly on the mesh (nothing built on one device), as
  ``state_specs`` lays it out.

  Every process then waits for the others: the run's first collective follows.
  """

  def init(rng):
    params, batch_stats, extra = method.init(rng, jnp.zeros(image_shape, jnp.float32))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=batch_stats, opt_state=tx.init(params), extra=extra)

  shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), state_specs(method),
                           is_leaf=lambda x: isinstance(x, P))
  state = jax.jit(init, out_shardings=shardings)(rng)
  parallel.wait_for_all_processes("cvrl_jax_train_state_created")
  return state


def make_train_step(method: methods.Method, tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh,
                    augment: Optional[Callable[[dict], dict]] = None):
  """The jitted step: per-device code under ``shard_map``, state donated.

  ``augment`` (``device_augment.batch_fn``) turns each device's part of the batch
  into the method's input first, so methods never see ``augment.on_device``.
  """

  def per_device(state: TrainState, batch: dict, rng: jax.Array):
    if augment is not None:
      batch = augment(batch)
    rng = jax.random.fold_in(rng, state.step)  # the same on every device
    grad_fn = jax.value_and_grad(method.loss, has_aux=True)
    # method.loss returns the mesh-mean loss, so with shard_map's type checking
    # the gradients of the replicated params come out already averaged.
    (_, (batch_stats, extra, metrics)), grads = grad_fn(
        state.params, state.batch_stats, state.extra, batch, rng, state.step, DATA)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = method.project_params(optax.apply_updates(state.params, updates))
    extra = method.after_update(params, batch_stats, extra, state.step)
    metrics = {**metrics, "grad_norm": optax.global_norm(grads)}
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state, extra=extra)
    return new_state, metrics

  specs = state_specs(method)
  step = jax.shard_map(per_device, mesh=mesh, in_specs=(specs, P(DATA), P()),
                       out_specs=(specs, P()))

  def train_step(state, batch, rng):
    state, metrics = step(state, batch, rng)
    return state, {k: clu_metrics.Average.from_model_output(v) for k, v in metrics.items()}

  return parallel.first_run_together(jax.jit(train_step, donate_argnums=0))
