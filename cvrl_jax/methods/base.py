"""What the training loop needs from a method, and the parts methods share.

A method owns its networks, its loss and any extra state (momentum encoder,
queue, centre, ...). The loop in ``train.py`` owns everything else: data, mesh,
optimiser, checkpoints, metrics, evaluation. Every method also trains an online
linear probe on the stop-gradient representation (as SimCLR's TF2 code does): it
reports how linearly separable the features are while training, and never changes
the encoder.

A method's hyper-parameters live under ``config.<its name>``: its class declares
their defaults in ``Method.defaults`` (with any shared key it sets otherwise), and
``config.base_config(name)`` attaches them; so a new method is one file here, one
config and one test file.

The parts written once here, so that each method file reads top to bottom:

* networks: ``Net`` (encoder -> head [-> predictor], the probe, multi-crop
  crops), ``mlp`` (the MLP a ``config.head`` / ``config.predictor`` section
  describes), ``mlp_net`` (a ``Net`` of those);
* BatchNorm: ``apply_together`` (all views one group; multi-crop's small crops
  another), ``apply_per_view`` (a group per view), ``apply_in_groups`` and
  ``groups_per_device`` (any groups), ``shuffle_bn`` (MoCo's ShuffleBN);
* a momentum (EMA) network: ``momentum_modules``, ``momentum_update``,
  ``cosine_momentum``; a FIFO queue: ``random_unit_rows`` (its start) and
  ``enqueue``;
* a sub-tree without gradient: ``freeze``; the loss's return value with the
  probe's: ``with_probe``; a string option's value: ``choice``; the one-view
  methods' check: ``require_one_view``;
* ``PairLossMethod``: one network on each view, a global loss of the two views'
  projections (Barlow Twins, VICReg);
* ``MomentumMethod``: a method with a momentum network (MoCo, BYOL, DINO).
"""

from typing import Any, Callable, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax
from jax.sharding import PartitionSpec as P

from cvrl_jax import losses, models, parallel
from cvrl_jax.models.heads import MLPHead

Params = Any
Metrics = dict[str, jax.Array]
LossOutput = tuple[jax.Array, tuple[Params, Any, Metrics]]

# Top-level names of a method's parameter (and BatchNorm statistics) tree that
# evaluation and export rely on: every method keeps its encoder under ENCODER,
# its projection head under HEAD and the online linear probe under PROBE.
ENCODER, HEAD, PROBE = "encoder", "head", "probe"


# ------------------------------------------------------------------- networks


def mlp(section: ml_collections.ConfigDict, axis_name: Optional[str],
        output_dim: Optional[int] = None) -> MLPHead:
  """The ``MLPHead`` a ``config.head`` or ``config.predictor`` section describes:
  ``num_layers - 1`` hidden layers of ``hidden_dim``, then ``output_dim`` (a
  predictor's is the head's, passed here), BatchNorm as ``use_bn`` / ``last_bn``."""
  out = section.output_dim if output_dim is None else output_dim
  return MLPHead([section.hidden_dim] * (section.num_layers - 1) + [out],
                 use_bn=section.use_bn, last_bn=section.last_bn, axis_name=axis_name)


class Net(nn.Module):
  """Encoder -> head [-> predictor], plus the online probe on the stop-gradient
  features (``num_classes=0``: no probe, as a momentum network has none).

  ``small`` (multi-crop): crops of another size through the same encoder; the
  head sees all crops, [images..., small...], the probe ``images`` only. The
  predictor reads the head's first output (an ``MLPHead``'s projection).

  Returns (encoder features of ``images``, the head's output, the prediction or
  None, the probe's logits or None).
  """
  encoder: nn.Module
  head: nn.Module
  predictor: Optional[nn.Module] = None
  num_classes: int = 0

  @nn.compact
  def __call__(self, images: jax.Array, small: Optional[jax.Array] = None,
               train: bool = True):
    h = self.encoder(images, train=train)
    every = h if small is None else jnp.concatenate([h, self.encoder(small, train=train)])
    out = self.head(every, train=train)
    p = None if self.predictor is None else self.predictor(out[0], train=train)[0]
    logits = (nn.Dense(self.num_classes, name=PROBE)(lax.stop_gradient(h))
              if self.num_classes else None)
    return h, out, p, logits


def mlp_net(config: ml_collections.ConfigDict, axis_name: Optional[str],
            num_classes: int = 0, predictor: bool = False) -> Net:
  """``Net`` of the configured encoder and ``config.head`` [and ``config.predictor``]."""
  return Net(models.make_encoder(config.model, axis_name), mlp(config.head, axis_name),
             mlp(config.predictor, axis_name, config.head.output_dim) if predictor else None,
             num_classes)


# ----------------------------------------------------------- BatchNorm groups


def apply_in_groups(net: nn.Module, variables: Any, images: jax.Array,
                    num_groups: int) -> tuple[Any, Any]:
  """``net`` in train mode on ``num_groups`` equal consecutive slices of ``images``.

  Each slice is normalised by BatchNorm with its own statistics (a BatchNorm
  ``axis_name`` still makes them cross-replica within the slice). Returns the
  outputs for all images in their order, and the batch_stats averaged over the
  slices: running averages are linear in the batch statistics, so that is the
  mean of the slices' updates.
  """
  if images.shape[0] % num_groups:
    raise ValueError(f"A batch of {images.shape[0]} images per device does not split "
                     f"into {num_groups} BatchNorm groups.")

  def run(x):
    out, updates = net.apply(variables, x, train=True, mutable=["batch_stats"])
    return out, updates.get("batch_stats", {})

  out, stats = jax.vmap(run)(images.reshape(num_groups, -1, *images.shape[1:]))
  out = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), out)
  return out, jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)


def apply_together(net: nn.Module, params: Params, batch_stats: Params,
                   views: tuple[jax.Array, ...],
                   small: tuple[jax.Array, ...] = ()) -> tuple[Any, Any]:
  """``net`` on all views as one batch, one BatchNorm group (SimCLR's), and on
  the multi-crop ``small`` crops as another. Outputs in the order [view 0...,
  view 1..., ..., small crops...]."""
  out, updates = net.apply({"params": params, "batch_stats": batch_stats},
                           jnp.concatenate(views), jnp.concatenate(small) if small else None,
                           train=True, mutable=["batch_stats"])
  return out, updates.get("batch_stats", {})


def apply_per_view(net: nn.Module, params: Params, batch_stats: Params,
                   views: tuple[jax.Array, ...]) -> tuple[Any, Any]:
  """``net`` on every view separately: one BatchNorm group per view (synchronised
  over the mesh when ``net``'s is), as the reference code of the Siamese methods
  runs them. Outputs in the order [view 0..., view 1..., ...]."""
  return apply_in_groups(net, {"params": params, "batch_stats": batch_stats},
                         jnp.concatenate(views), len(views))


def groups_per_device(bn_groups: int, axis_name: Optional[str], key: str) -> int:
  """How many of the mesh's ``bn_groups`` BatchNorm groups (``config.<key>``) each
  device holds."""
  devices = parallel.axis_size(axis_name)
  if bn_groups < devices or bn_groups % devices:
    raise ValueError(
        f"{key}={bn_groups} is not a multiple of the {devices} devices: each device "
        f"normalises whole BatchNorm groups. Use e.g. --config.{key}="
        f"{devices * max(1, bn_groups // devices)}.")
  return bn_groups // devices


def shuffle_bn(apply: Callable[[jax.Array], tuple[jax.Array, Any]], images: jax.Array,
               rng: jax.Array, axis_name: Optional[str]) -> tuple[jax.Array, Any]:
  """ShuffleBN (MoCo, CMC's momentum encoders): ``apply`` (images -> (outputs,
  batch_stats), in BN groups) on this device's share of the global batch permuted
  by ``rng`` (the same on every device). Returns its outputs for the whole global
  batch in the batch's order, the same on every device, and the batch_stats
  averaged over the mesh."""
  n = images.shape[0]
  everyone = parallel.gather(images, axis_name, invariant=True)
  perm = jax.random.permutation(rng, everyone.shape[0])
  out, stats = apply(everyone[parallel.own_rows(perm, n, axis_name)])
  # Row i of the gathered outputs belongs to image perm[i]: invert the permutation.
  out = parallel.gather(out, axis_name, invariant=True)[jnp.argsort(perm)]
  return out, parallel.pmean(stats, axis_name)


# ----------------------------------------------- momentum networks and queues


def momentum_modules(tree: Params) -> Params:
  """The sub-trees a momentum (EMA) network has, encoder and head: not the
  predictor, not the probe. It starts as this copy of the online network."""
  return {name: tree[name] for name in (ENCODER, HEAD) if name in tree}


def momentum_update(target: Params, params: Params, momentum: jax.Array) -> Params:
  """``target <- m target + (1 - m) online`` for every parameter of the target.

  Not ``target + (1 - m) (online - target)``, the same maths, which would keep an
  equal pair bit-identical (a frozen patch projection): its other rounding moves a
  BYOL cpu run's loss by 2e-3 relative at step 20 (2026-12-02), and runs of this
  library reproduce earlier versions' losses to 1e-6."""
  momentum = jnp.asarray(momentum, jnp.float32)  # 1 - m in float32, as for a schedule's m
  return jax.tree.map(lambda t, p: momentum * t + (1.0 - momentum) * p,
                      target, {name: params[name] for name in target})


def cosine_momentum(step: jax.Array, total_steps: int, base_momentum: float) -> jax.Array:
  """``1 - (1 - m0) (cos(pi step / total) + 1) / 2``: m0 rising to 1 on a half
  cosine (BYOL's target rate; MoCo v3's and DINO's as well)."""
  progress = jnp.minimum(step / max(total_steps, 1), 1.0)
  return 1.0 - (1.0 - base_momentum) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def random_unit_rows(rng: jax.Array, rows: int, dim: int) -> jax.Array:
  """``rows`` random unit vectors of ``dim``: a queue's (or a memory bank's) content
  before any key arrives, as MoCo initialises its queue."""
  return losses.l2_normalize(jax.random.normal(rng, (rows, dim)))


def enqueue(queue: jax.Array, ptr: jax.Array, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
  """FIFO: ``rows`` replace the oldest rows of ``queue``, from ``ptr`` on, wrapping
  around its end; returns the queue and the pointer to the next oldest row."""
  size, n = queue.shape[0], rows.shape[0]
  if n > size:
    raise ValueError(f"A batch of {n} rows does not fit in a queue of {size}.")
  index = (ptr + jnp.arange(n)) % size
  return queue.at[index].set(rows.astype(queue.dtype)), (ptr + n) % size


def freeze(params: Params, path: tuple[str, ...], frozen: jax.Array) -> Params:
  """``params`` whose sub-tree at ``path`` has zero gradient while ``frozen``."""
  if not path:
    return jax.tree.map(lambda p: jnp.where(frozen, lax.stop_gradient(p), p), params)
  return {**params, path[0]: freeze(params[path[0]], path[1:], frozen)}


# ------------------------------------------------------------ probe and schedules


def probe_loss_and_metrics(logits: jax.Array, labels: jax.Array,
                           axis_name: Optional[str]) -> tuple[jax.Array, Metrics]:
  """Cross-entropy of the online linear probe, and its train top-1 in percent."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  loss = -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))
  top1 = 100.0 * jnp.mean(jnp.argmax(logits, -1) == labels)
  loss, top1 = parallel.pmean((loss, top1), axis_name)
  return loss, {"probe_loss": loss, "probe_top1": top1}


def with_probe(loss: jax.Array, logits: jax.Array, labels: jax.Array,
               axis_name: Optional[str], batch_stats: Params, extra: Any,
               **metrics: jax.Array) -> LossOutput:
  """What ``Method.loss`` returns: the method's loss (its mesh mean) plus the
  probe's, to differentiate, and the metrics ``loss``, the probe's and ``metrics``."""
  probe_loss, probe_metrics = probe_loss_and_metrics(logits, labels, axis_name)
  return loss + probe_loss, (batch_stats, extra, {"loss": loss, **probe_metrics, **metrics})


def require_one_view(config: ml_collections.ConfigDict, method: str) -> None:
  """Refuses ``num_views`` other than 1 for a method that learns from one view per
  image (InstDisc, CPC)."""
  if config.num_views != 1:
    raise ValueError(f"{method} learns from one view per image, not num_views="
                     f"{config.num_views}: set --config.num_views=1.")


def choice(key: str, value: str, choices: Mapping[str, Any]) -> Any:
  """``choices[value]`` for the string option ``config.<key>``, or an error that
  names the choices (methods call it in ``__init__`` too, to refuse a bad value
  before anything is built)."""
  if value not in choices:
    raise ValueError(f"config.{key}={value!r} is not one of {sorted(choices)}.")
  return choices[value]


def steps_per_epoch(config: ml_collections.ConfigDict, total_steps: int) -> float:
  """Steps in one epoch, for a method's schedules given in epochs (``total_steps``
  comes from ``num_epochs``, or a preset sets both)."""
  if not config.num_epochs:
    raise ValueError("This method's schedules are in epochs: set --config.num_epochs "
                     "(with total_steps set, it only converts epochs to steps).")
  return total_steps / config.num_epochs


# ------------------------------------------------------------------ interface


class Method:
  """Interface used by ``train.py``; see ``methods/simclr.py`` for the simplest one."""

  # Added to the base config by ``config.base_config(name)``: the method's own
  # hyper-parameters under its name, and shared keys it sets otherwise.
  defaults: ClassVar[dict] = {}

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int,
               total_steps: int):
    self.config = config
    self.num_classes = num_classes
    self.total_steps = total_steps  # for schedules of the method's own (EMA rates)

  def net(self, axis_name: Optional[str]) -> nn.Module:
    """The network trained by gradient descent (BatchNorm across ``axis_name``):
    by default the configured encoder, ``config.head`` and the probe."""
    return mlp_net(self.config, axis_name, self.num_classes)

  def init(self, rng: jax.Array, images: jax.Array) -> tuple[Params, Params, Any]:
    """(params, batch_stats, extra state) for one local batch of images."""
    variables = self.net(None).init(rng, images, train=False)
    return variables["params"], variables.get("batch_stats", {}), {}

  def extra_specs(self) -> Any:
    """``PartitionSpec``s of the extra state (a prefix of its tree) over the mesh's
    ``data`` axis: replicated (``P()``) unless a method shards a part too large to
    keep whole on every device."""
    return P()

  def loss(self, params: Params, batch_stats: Params, extra: Any, batch: dict,
           rng: jax.Array, step: jax.Array, axis_name: Optional[str]) -> LossOutput:
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
    """The representation evaluated downstream (kNN, linear probe), eval mode: the
    encoder's output."""
    variables = {"params": params[ENCODER]}
    if ENCODER in batch_stats:
      variables["batch_stats"] = batch_stats[ENCODER]
    return models.make_encoder(self.config.model, None).apply(variables, images, train=False)


class PairLossMethod(Method):
  """One network (encoder -> projector) on each view separately, one BatchNorm
  group per view synchronised over the mesh (``apply_per_view``), as the
  reference code of Barlow Twins and VICReg runs it; the loss is ``pair_loss`` of
  the two views' projections, global already (the same value on every device);
  the probe learns from view 1."""

  def pair_loss(self, z1: jax.Array, z2: jax.Array, axis_name: Optional[str]) -> jax.Array:
    raise NotImplementedError

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    (_, (z, _), _, logits), batch_stats = apply_per_view(
        self.net(axis_name), params, batch_stats, batch["views"])
    z1, z2 = jnp.split(z, 2)
    return with_probe(self.pair_loss(z1, z2, axis_name), logits[:z1.shape[0]], batch["label"],
                      axis_name, batch_stats, extra)


class MomentumMethod(Method):
  """A method whose ``extra`` holds a momentum (EMA) network: a copy of the online
  network's encoder and head at init (``momentum_modules``), moved towards it
  after every optimiser step with ``momentum(step + 1)``, never differentiated.
  Its parameters and BatchNorm statistics are ``extra[names[0]]`` and
  ``extra[names[1]]``, names every checkpoint of these methods has."""

  names: ClassVar[tuple[str, str]] = ("key_params", "key_batch_stats")

  def momentum(self, step: jax.Array) -> jax.Array:
    """The EMA rate m at ``step``; the update after step s uses m(s + 1), as it
    makes the momentum network of step s + 1."""
    raise NotImplementedError

  def target_net(self, axis_name: Optional[str]) -> nn.Module:
    """The momentum network: the online one without predictor and probe."""
    return self.net(axis_name).clone(predictor=None, num_classes=0)

  def apply_target_per_view(self, extra: dict, views: tuple[jax.Array, ...],
                            axis_name: Optional[str]) -> tuple[jax.Array, dict]:
    """The momentum network's projections of every view, one BatchNorm group per
    view (``apply_per_view``), without gradient; and ``extra`` with its new
    BatchNorm statistics."""
    (_, (z, _), _, _), stats = apply_per_view(self.target_net(axis_name), extra[self.names[0]],
                                              extra[self.names[1]], views)
    return lax.stop_gradient(z), {**extra, self.names[1]: stats}

  def apply_both_per_view(self, params: Params, batch_stats: Params, extra: dict,
                          views: tuple[jax.Array, ...], axis_name: Optional[str]
                          ) -> tuple[jax.Array, jax.Array, jax.Array, Params, dict]:
    """Both networks on every view, one BatchNorm group per view (MoCo v3, BYOL):
    the online predictions (the projections, for a network without predictor)
    and probe logits, the momentum network's projections (no gradient), and the
    new BatchNorm statistics (``extra``'s for the target)."""
    (_, (q, _), p, logits), batch_stats = apply_per_view(self.net(axis_name), params,
                                                         batch_stats, views)
    z, extra = self.apply_target_per_view(extra, views, axis_name)
    return q if p is None else p, logits, z, batch_stats, extra

  def init(self, rng, images):
    params, batch_stats, extra = super().init(rng, images)
    return params, batch_stats, {**extra, self.names[0]: momentum_modules(params),
                                 self.names[1]: momentum_modules(batch_stats)}

  def after_update(self, params, batch_stats, extra, step):
    del batch_stats
    # The targets of step + 1 come from this update: use that step's momentum.
    target = momentum_update(extra[self.names[0]], params, self.momentum(step + 1))
    return {**extra, self.names[0]: target}
