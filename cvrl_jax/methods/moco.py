"""MoCo v1 / v2 (He et al. 2020; Chen et al. 2020): a queue of negatives and a
momentum key network.

A query network (encoder -> projection head) learns by gradient descent; a key
network of the same shape follows it as an exponential moving average,
``key <- m key + (1 - m) query`` after every optimiser step, and is never
differentiated. View 1 gives the queries, view 2 the keys; the negatives are a
FIFO queue of the K most recent keys of earlier global batches
(``losses.moco_infonce``). v1 and v2 differ only in configuration (head,
temperature, augmentations, schedule): ``configs/moco_v1.py``,
``configs/moco_v2.py``. MoCo v3 is ``moco_v3.py``.

``moco.symmetric``: the symmetric loss of the MoCo authors' CIFAR-10 demo,
InfoNCE of (view-1 queries, view-2 keys) and of (view-2 queries, view-1 keys)
against the one queue, into which both batches of keys then go (2B keys a
step, as in the demo). The demo sums the two losses; here they are averaged,
so the loss reads like the asymmetric one, and at the same rate its gradients
are half the demo's.

BatchNorm: a query and its key must not share statistics
--------------------------------------------------------
If query i and its positive key i are normalised with statistics of the same
samples, the statistics themselves tell the model which keys belong to the
batch of its query: the pretext task is solved by that leak and the
representation stops improving (on one GPU: "the loss stops falling after a few
epochs"). MoCo uses per-GPU BatchNorm and ShuffleBN (MoCo section 3.3): the keys
are computed on a batch shuffled across GPUs, then un-shuffled.

Here the global batch is split into ``moco.bn_groups = G`` BN groups, each
normalised with its own statistics: every device takes G / devices consecutive
groups of its shard (``base.apply_in_groups``). Queries use the batch as it
comes; keys use the global batch permuted by a permutation drawn from the step's
RNG (the same on every device), then are gathered and put back in order
(``base.shuffle_bn``). On 8 devices with G = 8 this is exactly MoCo's per-GPU
ShuffleBN; on 1 device with G = 8 it is the same computation (one device
emulating 8), so a run gives the same losses on 1 and on 8 devices. The running
averages kept are the mean over the groups (MoCo keeps GPU 0's).

State: the key network's parameters and BatchNorm statistics, the queue of keys
and its pointer are ``extra`` in the train state. They are replicated like the
parameters: the queue receives the gathered keys of the global batch, so it is
the same on every device, and being part of the state it is checkpointed and
restored with it.
"""

import jax
import jax.numpy as jnp
from jax import lax

from cvrl_jax import losses, parallel
from cvrl_jax.methods import base


class MoCo(base.MomentumMethod):
  """MoCo v1 / v2: a queue of negatives, InfoNCE, ShuffleBN over BN groups."""
  defaults = {"moco": dict(queue_size=65_536, momentum=0.999, temperature=0.07,
                           bn_groups=8,  # BatchNorm groups over the global batch
                           symmetric=False)}

  def __init__(self, config, num_classes, total_steps):
    super().__init__(config, num_classes, total_steps)
    keys = config.batch_size * (2 if config.moco.symmetric else 1)
    if config.moco.queue_size < keys:
      raise ValueError(f"moco.queue_size={config.moco.queue_size} is smaller than the {keys} "
                       f"keys of a step: the queue must hold them.")

  def momentum(self, step):
    return jnp.asarray(self.config.moco.momentum, jnp.float32)

  def init(self, rng, images):
    net_rng, queue_rng = jax.random.split(rng)
    params, batch_stats, extra = super().init(net_rng, images)  # and the key network
    queue = base.random_unit_rows(queue_rng, self.config.moco.queue_size,
                                  self.config.head.output_dim)
    return params, batch_stats, {**extra, "queue": queue, "queue_ptr": jnp.zeros((), jnp.int32)}

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del step
    m = self.config.moco
    views, n = batch["views"], batch["views"][0].shape[0]
    # Asymmetric: view 1's queries, view 2's keys. Symmetric: also view 2's
    # queries against view 1's keys.
    query_views, key_views = (views, views[::-1]) if m.symmetric else (views[:1], views[1:])
    groups = base.groups_per_device(m.bn_groups, axis_name, "moco.bn_groups")
    # BN groups are device-local (axis_name=None); their statistics are averaged below.
    (_, (q, _), _, logits), batch_stats = base.apply_in_groups(
        self.net(None), {"params": params, "batch_stats": batch_stats},
        jnp.concatenate(query_views), groups * len(query_views))

    def key_projections(images):
      (_, (k, _), _, _), stats = base.apply_in_groups(
          self.target_net(None),
          {"params": extra["key_params"], "batch_stats": extra["key_batch_stats"]}, images, groups)
      return k, stats

    # Each key view is shuffled by a permutation of its own (the first by the
    # step's, as asymmetric MoCo).
    rngs = (rng, jax.random.fold_in(rng, 1))
    keys, key_stats = zip(*(base.shuffle_bn(key_projections, images, r, axis_name)
                            for images, r in zip(key_views, rngs)))
    keys = [lax.stop_gradient(losses.l2_normalize(k)) for k in keys]
    own_keys = jnp.concatenate([parallel.own_rows(k, n, axis_name) for k in keys])
    # The mean over the queries of both views: the two directions' average.
    loss = losses.moco_infonce(q, own_keys, extra["queue"], temperature=m.temperature)
    queue, queue_ptr = base.enqueue(extra["queue"], extra["queue_ptr"], jnp.concatenate(keys))
    key_batch_stats = jax.tree.map(lambda *s: sum(s) / len(s), *key_stats)
    extra = {**extra, "key_batch_stats": key_batch_stats, "queue": queue, "queue_ptr": queue_ptr}
    return base.with_probe(parallel.pmean(loss, axis_name), logits[:n], batch["label"], axis_name,
                           parallel.pmean(batch_stats, axis_name), extra)


METHODS = {"moco": MoCo}
