"""What the training loop needs from a method, and the parts all methods share.

A method owns its networks, its loss and any extra state (momentum encoder,
queue, centre, ...). The loop in ``train.py`` owns everything else: data, mesh,
optimiser, checkpoints, metrics, evaluation. Every method also trains an online
linear probe on the stop-gradient representation (as SimCLR's TF2 code does): it
reports how linearly separable the features are while training, and never changes
the encoder.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax


Params = Any
Metrics = dict[str, jax.Array]

# Top-level names of a method's parameter (and BatchNorm statistics) tree that
# evaluation and export rely on: every method keeps its encoder under ENCODER,
# its projection head under HEAD and the online linear probe under PROBE.
ENCODER, HEAD, PROBE = "encoder", "head", "probe"


def pmean(x: Any, axis_name: Optional[str]) -> Any:
  """Mean over the mesh axis, or ``x`` itself on one device."""
  return x if axis_name is None else lax.pmean(x, axis_name)


def probe_loss_and_metrics(logits: jax.Array, labels: jax.Array,
                           axis_name: Optional[str]) -> tuple[jax.Array, Metrics]:
  """Cross-entropy of the online linear probe, and its train top-1 in percent."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  loss = -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))
  top1 = 100.0 * jnp.mean(jnp.argmax(logits, -1) == labels)
  loss, top1 = pmean((loss, top1), axis_name)
  return loss, {"probe_loss": loss, "probe_top1": top1}


def steps_per_epoch(config: ml_collections.ConfigDict, total_steps: int) -> float:
  """Steps in one epoch, for a method's schedules given in epochs (``total_steps``
  comes from ``num_epochs``, or a preset sets both)."""
  if not config.num_epochs:
    raise ValueError("This method's schedules are in epochs: set --config.num_epochs "
                     "(with total_steps set, it only converts epochs to steps).")
  return total_steps / config.num_epochs


class Method:
  """Interface used by ``train.py``; see ``methods/simclr.py`` for the simplest one."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int,
               total_steps: int):
    self.config = config
    self.num_classes = num_classes
    self.total_steps = total_steps  # for schedules of the method's own (EMA rates)

  def init(self, rng: jax.Array, images: jax.Array) -> tuple[Params, Params, Any]:
    """(params, batch_stats, extra state) for one local batch of images."""
    raise NotImplementedError

  def loss(self, params: Params, batch_stats: Params, extra: Any, batch: dict,
           rng: jax.Array, step: jax.Array, axis_name: Optional[str]
           ) -> tuple[jax.Array, tuple[Params, Any, Metrics]]:
    """Loss to differentiate (already averaged over the mesh) and its by-products.

    Runs per device under ``shard_map``; ``rng`` is the same on every device.
    Returns (loss, (new batch_stats, new extra, metrics)); metrics are means over
    the mesh and include ``loss``, the method's own objective.
    """
    raise NotImplementedError

  def project_params(self, params: Params) -> Params:
    """Parameters after each optimiser step, e.g. SwAV's prototypes put back on the
    unit sphere; the identity for most methods."""
    return params

  def after_update(self, params: Params, batch_stats: Params, extra: Any,
                   step: jax.Array) -> Any:
    """Extra state after the optimiser step (e.g. a momentum-encoder update)."""
    del params, batch_stats, step
    return extra

  def features(self, params: Params, batch_stats: Params, images: jax.Array) -> jax.Array:
    """The representation evaluated downstream (kNN, linear probe), eval mode."""
    raise NotImplementedError
