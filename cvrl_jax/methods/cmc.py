"""CMC (Tian, Krishnan & Isola 2019, "Contrastive Multiview Coding"), with the
momentum encoders and queues of the authors' ``--moco`` option.

An image is split into two views of itself, the L and the ab channels of CIE
L*a*b*, and one encoder per view learns to pick out the other view of the same
image among other images' (``model.name="lab_split"``: the RGB-to-Lab conversion
and two ResNets of half the configured width, models/lab_split.py). Each view's
features go through a head of its own (a linear 128-d map by default, the
authors'; ``config.head``) to a unit vector, z_L and z_ab.

The objective is the two-view contrastive loss in both directions, summed (the
authors' ``l_loss + ab_loss``), each an InfoNCE against a queue:

    loss_l  = InfoNCE(query z_L,  positive key k_ab, negatives queue_ab)
    loss_ab = InfoNCE(query z_ab, positive key k_L,  negatives queue_l)

(``losses.moco_infonce``, temperature ``cmc.temperature``). The keys k_L and k_ab
come from a momentum copy of the whole network (both encoders and heads),
``key <- m key + (1 - m) online`` after every step (``base.MomentumMethod``), and
each queue holds the ``cmc.queue_size`` most recent keys of its view from earlier
global batches. The paper's first version contrasts against memory banks (one
row per training image and view, NCE over 4096 noise rows); its authors' code
adds this momentum variant, which needs no per-image index and whose negatives
are at most ``queue_size / batch`` steps old, not an epoch (configs/instdisc.py
shows why a bank learns little in one epoch).

Views: the queries come from ``views[0]``, the keys from ``views[-1]``. With
``num_views=1`` (the paper's) L and ab are channels of the same crop; with 2 the
key view is another crop of the image, so each pair differs in both crop and
channels (the ``cpu`` preset, configs/cmc.py says why).

BatchNorm, global batch semantics and state as ``moco.py``: the queries are
normalised in ``cmc.bn_groups`` groups of the batch as it comes, the keys in the
same groups of the global batch permuted by the step's RNG (``base.shuffle_bn``),
so a query and its key never share statistics; each queue receives the gathered
keys of the whole global batch, in its order, and one pointer serves both (they
fill at the same rate). 1 device and 8 give the same steps (tests/test_cmc.py).
The key network, both queues and the pointer are ``extra`` in the train state,
checkpointed and restored with it.

The representation evaluated downstream (kNN monitor, linear probe, fine-tuning,
export) is the encoder's output, both encoders' pooled features concatenated
[L's, ab's], as the paper evaluates CMC.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cvrl_jax import losses, models, parallel
from cvrl_jax.methods import base


class ViewHeads(nn.Module):
  """One head per view on its half of the encoder's features (``LabSplit``
  concatenates [L's, ab's], of equal width): returns (z_L, z_ab)."""
  l: nn.Module
  ab: nn.Module

  def __call__(self, h: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    h_l, h_ab = jnp.split(h, 2, axis=-1)
    return self.l(h_l, train=train)[0], self.ab(h_ab, train=train)[0]


def two_view_loss(q_l: jax.Array, q_ab: jax.Array, k_l: jax.Array, k_ab: jax.Array,
                  queue_l: jax.Array, queue_ab: jax.Array, *, temperature: float
                  ) -> tuple[jax.Array, jax.Array]:
  """(loss_l, loss_ab): L's queries against ab's keys and queue, and ab's against
  L's (``losses.moco_infonce``); CMC's objective is their sum."""
  return (losses.moco_infonce(q_l, k_ab, queue_ab, temperature=temperature),
          losses.moco_infonce(q_ab, k_l, queue_l, temperature=temperature))


class CMC(base.MomentumMethod):
  """CMC on L and ab: two encoders, two heads, a momentum copy and a queue per view."""
  defaults = {"cmc": dict(queue_size=16_384, momentum=0.999, temperature=0.07,
                          bn_groups=8),  # BatchNorm groups over the global batch
              "head": dict(num_layers=1, hidden_dim=0, output_dim=128, use_bn=False)}

  def __init__(self, config, num_classes, total_steps):
    super().__init__(config, num_classes, total_steps)
    if config.model.name != "lab_split":
      raise ValueError(f"CMC contrasts the L and ab channels, each with its own encoder: "
                       f"set --config.model.name=lab_split, not {config.model.name!r}.")
    if config.num_views not in (1, 2):
      raise ValueError(f"CMC reads one crop (L and ab of it) or two (keys from the second), "
                       f"not num_views={config.num_views}.")
    if config.cmc.queue_size < config.batch_size:
      raise ValueError(f"cmc.queue_size={config.cmc.queue_size} is smaller than the "
                       f"{config.batch_size} keys of a step: the queue must hold them.")

  def net(self, axis_name):
    head = lambda: base.mlp(self.config.head, axis_name)
    return base.Net(models.make_encoder(self.config.model, axis_name),
                    ViewHeads(head(), head()), num_classes=self.num_classes)

  def momentum(self, step):
    return jnp.asarray(self.config.cmc.momentum, jnp.float32)

  def init(self, rng, images):
    net_rng, l_rng, ab_rng = jax.random.split(rng, 3)
    params, batch_stats, extra = super().init(net_rng, images)  # and the key network
    queue = lambda r: base.random_unit_rows(r, self.config.cmc.queue_size,
                                            self.config.head.output_dim)
    return params, batch_stats, {**extra, "queue_l": queue(l_rng), "queue_ab": queue(ab_rng),
                                 "queue_ptr": jnp.zeros((), jnp.int32)}

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del step
    c = self.config.cmc
    views, n = batch["views"], batch["views"][0].shape[0]
    groups = base.groups_per_device(c.bn_groups, axis_name, "cmc.bn_groups")
    # BN groups are device-local (axis_name=None); their statistics are averaged below.
    (_, (q_l, q_ab), _, logits), batch_stats = base.apply_in_groups(
        self.net(None), {"params": params, "batch_stats": batch_stats}, views[0], groups)

    def key_projections(images):
      (_, (k_l, k_ab), _, _), stats = base.apply_in_groups(
          self.target_net(None),
          {"params": extra["key_params"], "batch_stats": extra["key_batch_stats"]}, images, groups)
      return jnp.concatenate([k_l, k_ab], axis=-1), stats

    keys, key_batch_stats = base.shuffle_bn(key_projections, views[-1], rng, axis_name)
    k_l, k_ab = (lax.stop_gradient(losses.l2_normalize(k)) for k in jnp.split(keys, 2, -1))
    own = lambda k: parallel.own_rows(k, n, axis_name)
    loss_l, loss_ab = two_view_loss(q_l, q_ab, own(k_l), own(k_ab), extra["queue_l"],
                                    extra["queue_ab"], temperature=c.temperature)
    queue_l, queue_ptr = base.enqueue(extra["queue_l"], extra["queue_ptr"], k_l)
    queue_ab, _ = base.enqueue(extra["queue_ab"], extra["queue_ptr"], k_ab)
    extra = {**extra, "key_batch_stats": key_batch_stats, "queue_l": queue_l,
             "queue_ab": queue_ab, "queue_ptr": queue_ptr}
    loss_l, loss_ab = parallel.pmean((loss_l, loss_ab), axis_name)
    return base.with_probe(loss_l + loss_ab, logits, batch["label"], axis_name,
                           parallel.pmean(batch_stats, axis_name), extra,
                           loss_l=loss_l, loss_ab=loss_ab)


METHODS = {"cmc": CMC}
