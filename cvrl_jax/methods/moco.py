"""MoCo v1 / v2 (He et al. 2020; Chen et al. 2020) and MoCo v3 (Chen, Xie & He 2021).

A query network learns by gradient descent; a key network of the same shape
follows it as an exponential moving average, ``key <- m key + (1 - m) query``
after every optimiser step, and is never differentiated.

* v1 / v2 (``method="moco"``): view 1 gives the queries, view 2 the keys; the
  negatives are a FIFO queue of the K most recent keys of earlier global
  batches (``losses.moco_infonce``). v1 and v2 differ only in configuration
  (head, temperature, augmentations, schedule): ``configs/moco_v1.py``,
  ``configs/moco_v2.py``.
* v3 (``method="moco_v3"``): no queue; a predictor after the query network's
  projector; the symmetric loss ``ctr(q1, k2) + ctr(q2, k1)`` against the keys
  of the whole global batch (``losses.moco_v3_ctr``); m rises from m0 to 1 on a
  half cosine. ``configs/moco_v3.py``.

BatchNorm: a query and its key must not share statistics
--------------------------------------------------------
If query i and its positive key i are normalised with statistics of the same
samples, the statistics themselves tell the model which keys belong to the
batch of its query: the pretext task is solved by that leak and the
representation stops improving (on one GPU: "the loss stops falling after a few
epochs"). MoCo v1 / v2 use per-GPU BatchNorm and ShuffleBN (MoCo section 3.3):
the keys are computed on a batch shuffled across GPUs, then un-shuffled.

Here the global batch is split into ``moco.bn_groups = G`` BN groups, each
normalised with its own statistics: every device takes G / devices consecutive
groups of its shard (``apply_in_groups``). Queries use the batch as it comes;
keys use the global batch permuted by a permutation drawn from the step's RNG
(the same on every device), then are gathered and put back in order
(``shuffle_bn``). On 8 devices with G = 8 this is exactly MoCo's per-GPU
ShuffleBN; on 1 device with G = 8 it is the same computation (one device
emulating 8), so a run gives the same losses on 1 and on 8 devices. The running
averages kept are the mean over the groups (MoCo keeps GPU 0's).

v3 uses synchronised BatchNorm everywhere, as its code converts every BN to
SyncBatchNorm, and runs each view through the networks separately: each view's
global batch is one BN group.

State: the key network's parameters and BatchNorm statistics, and for v1 / v2
the queue of keys and its pointer, are ``extra`` in the train state. They are
replicated like the parameters: the queue receives the gathered keys of the
global batch, so it is the same on every device, and being part of the state it
is checkpointed and restored with it.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from cvrl_jax import losses, models
from cvrl_jax.methods import base
from cvrl_jax.models.heads import MLPHead

KEY_MODULES = ("encoder", "head")  # the parameters the key network has


class QueryNet(nn.Module):
  """Encoder -> projection head [-> predictor]; plus the online probe on the features."""
  encoder: nn.Module
  head: nn.Module
  predictor: Optional[nn.Module]
  num_classes: int

  @nn.compact
  def __call__(self, images: jax.Array, train: bool):
    h = self.encoder(images, train=train)
    q, _ = self.head(h, train=train)
    if self.predictor is not None:
      q, _ = self.predictor(q, train=train)
    logits = nn.Dense(self.num_classes, name="probe")(lax.stop_gradient(h))
    return h, q, logits


class KeyNet(nn.Module):
  """Encoder -> projection head, with the same parameter names as ``QueryNet``."""
  encoder: nn.Module
  head: nn.Module

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    k, _ = self.head(self.encoder(images, train=train), train=train)
    return k


def momentum_update(key_params: Any, params: Any, momentum: jax.Array) -> Any:
  """``key <- m key + (1 - m) query`` for every parameter of the key network."""
  return jax.tree.map(lambda k, q: momentum * k + (1.0 - momentum) * q,
                      key_params, {name: params[name] for name in key_params})


def cosine_momentum(step: jax.Array, total_steps: int, base_momentum: float) -> jax.Array:
  """MoCo v3's key momentum: ``1 - (1 - m0) (cos(pi step / total) + 1) / 2``."""
  progress = jnp.minimum(step / max(total_steps, 1), 1.0)
  return 1.0 - (1.0 - base_momentum) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def enqueue(queue: jax.Array, ptr: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """FIFO: ``keys`` replace the oldest rows of ``queue``, from ``ptr`` on, wrapping
  around its end; returns the queue and the pointer to the next oldest row."""
  size, n = queue.shape[0], keys.shape[0]
  if n > size:
    raise ValueError(f"A batch of {n} keys does not fit in a queue of {size}.")
  rows = (ptr + jnp.arange(n)) % size
  return queue.at[rows].set(keys.astype(queue.dtype)), (ptr + n) % size


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


def groups_per_device(bn_groups: int, axis_name: Optional[str]) -> int:
  """How many of the mesh's ``bn_groups`` BatchNorm groups each device holds."""
  devices = 1 if axis_name is None else lax.axis_size(axis_name)
  if bn_groups < devices or bn_groups % devices:
    raise ValueError(
        f"moco.bn_groups={bn_groups} is not a multiple of the {devices} devices: each "
        f"device normalises whole BatchNorm groups. Use e.g. --config.moco.bn_groups="
        f"{devices * max(1, bn_groups // devices)}.")
  return bn_groups // devices


def _gather(x: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """The global batch, the same (invariant) value on every device."""
  return x if axis_name is None else lax.all_gather(x, axis_name, tiled=True, to="invarying")


def _own_rows(x: jax.Array, n: int, axis_name: Optional[str]) -> jax.Array:
  """This device's ``n`` rows of a global batch."""
  if axis_name is None:
    return x
  return lax.dynamic_slice_in_dim(x, lax.axis_index(axis_name) * n, n)


def shuffle_bn(net: nn.Module, variables: Any, images: jax.Array, rng: jax.Array,
               num_groups: int, axis_name: Optional[str]) -> tuple[jax.Array, Any]:
  """ShuffleBN: ``net``'s outputs for the global batch, in its order (the same on
  every device), computed on the batch permuted across ``num_groups`` BN groups
  per device. ``rng`` must be the same on every device. Also returns the
  batch_stats averaged over all groups of the mesh."""
  n = images.shape[0]
  everyone = _gather(images, axis_name)
  perm = jax.random.permutation(rng, everyone.shape[0])
  out, stats = apply_in_groups(net, variables, everyone[_own_rows(perm, n, axis_name)],
                               num_groups)
  # Row i of the gathered outputs belongs to image perm[i]: invert the permutation.
  return _gather(out, axis_name)[jnp.argsort(perm)], base.pmean(stats, axis_name)


def _head(config: ml_collections.ConfigDict, axis_name: Optional[str]) -> MLPHead:
  head = config.head
  dims = [head.hidden_dim] * (head.num_layers - 1) + [head.output_dim]
  return MLPHead(dims, use_bn=head.get("use_bn", True), last_bn=head.get("last_bn", True),
                 axis_name=axis_name)


class _MomentumContrast(base.Method):
  """What MoCo v1/v2 and v3 share: the two networks, the momentum update, features."""

  def _predictor(self, axis_name: Optional[str]) -> Optional[nn.Module]:
    del axis_name
    return None

  def _query_net(self, axis_name: Optional[str]) -> QueryNet:
    return QueryNet(models.make_encoder(self.config.model, axis_name), _head(self.config, axis_name),
                    self._predictor(axis_name), self.num_classes)

  def _key_net(self, axis_name: Optional[str]) -> KeyNet:
    return KeyNet(models.make_encoder(self.config.model, axis_name), _head(self.config, axis_name))

  def _key_variables(self, extra: dict) -> dict:
    return {"params": extra["key_params"], "batch_stats": extra["key_batch_stats"]}

  def momentum(self, step: jax.Array) -> jax.Array:
    return jnp.asarray(self.config.moco.momentum, jnp.float32)

  def init(self, rng, images):
    variables = self._query_net(None).init(rng, images, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    # The key network starts as a copy of the query network.
    pick = lambda tree: {name: tree[name] for name in KEY_MODULES if name in tree}
    return params, batch_stats, {"key_params": pick(params), "key_batch_stats": pick(batch_stats)}

  def after_update(self, params, batch_stats, extra, step):
    del batch_stats
    # The keys of step + 1 come from this update: use that step's momentum.
    key_params = momentum_update(extra["key_params"], params, self.momentum(step + 1))
    return {**extra, "key_params": key_params}

  def features(self, params, batch_stats, images):
    variables = {"params": params["encoder"]}
    if "encoder" in batch_stats:
      variables["batch_stats"] = batch_stats["encoder"]
    return models.make_encoder(self.config.model, None).apply(variables, images, train=False)


class MoCo(_MomentumContrast):
  """MoCo v1 / v2: a queue of negatives, InfoNCE, ShuffleBN over BN groups."""

  def __init__(self, config, num_classes, total_steps):
    super().__init__(config, num_classes, total_steps)
    if config.moco.queue_size < config.batch_size:
      raise ValueError(f"moco.queue_size={config.moco.queue_size} is smaller than the global "
                       f"batch ({config.batch_size}): the queue must hold a batch of keys.")

  def init(self, rng, images):
    net_rng, queue_rng = jax.random.split(rng)
    params, batch_stats, extra = super().init(net_rng, images)
    queue = jax.random.normal(queue_rng, (self.config.moco.queue_size,
                                          self.config.head.output_dim))
    extra.update(queue=losses.l2_normalize(queue), queue_ptr=jnp.zeros((), jnp.int32))
    return params, batch_stats, extra

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del step
    images_q, images_k = batch["views"]
    groups = groups_per_device(self.config.moco.bn_groups, axis_name)
    # BN groups are device-local (axis_name=None); their statistics are averaged below.
    (_, q, logits), batch_stats = apply_in_groups(
        self._query_net(None), {"params": params, "batch_stats": batch_stats}, images_q, groups)
    keys, key_batch_stats = shuffle_bn(self._key_net(None), self._key_variables(extra),
                                       images_k, rng, groups, axis_name)
    keys = lax.stop_gradient(losses.l2_normalize(keys))
    loss = base.pmean(losses.moco_infonce(q, _own_rows(keys, q.shape[0], axis_name),
                                          extra["queue"], temperature=self.config.moco.temperature),
                      axis_name)
    probe_loss, metrics = base.probe_loss_and_metrics(logits, batch["label"], axis_name)
    queue, queue_ptr = enqueue(extra["queue"], extra["queue_ptr"], keys)
    extra = {**extra, "key_batch_stats": key_batch_stats, "queue": queue, "queue_ptr": queue_ptr}
    return loss + probe_loss, (base.pmean(batch_stats, axis_name), extra,
                               {"loss": loss, **metrics})


class MoCoV3(_MomentumContrast):
  """MoCo v3: predictor, symmetric loss over the global batch, cosine key momentum."""

  def _predictor(self, axis_name):
    p = self.config.predictor
    return MLPHead([p.hidden_dim] * (p.num_layers - 1) + [self.config.head.output_dim],
                   last_bn=p.last_bn, axis_name=axis_name)

  def momentum(self, step):
    return cosine_momentum(step, self.total_steps, self.config.moco.momentum)

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng
    x1, x2 = batch["views"]
    views = jnp.concatenate([x1, x2])
    # Two BN groups, one per view, each synchronised over the mesh.
    (_, q, logits), batch_stats = apply_in_groups(
        self._query_net(axis_name), {"params": params, "batch_stats": batch_stats}, views, 2)
    k, key_batch_stats = apply_in_groups(self._key_net(axis_name), self._key_variables(extra),
                                         views, 2)
    (q1, q2), (k1, k2) = jnp.split(q, 2), jnp.split(lax.stop_gradient(k), 2)
    ctr = lambda q, k: losses.moco_v3_ctr(q, k, temperature=self.config.moco.temperature,
                                          axis_name=axis_name)
    loss = base.pmean(ctr(q1, k2) + ctr(q2, k1), axis_name)
    probe_loss, metrics = base.probe_loss_and_metrics(logits[:x1.shape[0]], batch["label"],
                                                      axis_name)
    metrics.update(loss=loss, key_momentum=self.momentum(step))
    return loss + probe_loss, (batch_stats, {**extra, "key_batch_stats": key_batch_stats},
                               metrics)


METHODS = {"moco": MoCo, "moco_v3": MoCoV3}
