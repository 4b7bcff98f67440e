"""SwAV (Caron et al. 2020): swapped prediction of equal-partition cluster codes.

Every crop of an image goes through encoder -> MLP -> L2 normalisation -> a
linear layer of K unit-length prototypes, giving scores ``z . c_k``. For each of
the two large crops, Sinkhorn-Knopp turns the scores of the *global* batch into
soft codes that use every prototype equally (``losses.sinkhorn``); every other
crop predicts those codes with a softmax of its own scores
(``losses.swapped_prediction``).
Codes come only from the large crops; the small multi-crop crops only predict.

* Prototypes stay on the unit sphere: normalised at init and after every
  optimiser step (``project_params``), and frozen (zero gradient) for the first
  ``swav.freeze_prototypes_steps`` steps, when the codes are still random.
* Sinkhorn over the mesh: each device holds its samples' columns; the sums over
  samples (per prototype, and the total) are ``psum``s, so 8 devices give the
  codes of one device holding the whole batch.
* Queue (``swav.queue_size > 0``, for small batches): the embeddings of the
  large crops of the latest global batches, from ``queue_start_epochs`` on. Once
  full, its rows join the batch in Sinkhorn (as extra samples, scored with the
  current prototypes), so the equal partition is over queue + batch. It is
  replicated like MoCo's; each device uses its own slice of rows in Sinkhorn.
* BatchNorm is global over the mesh; each crop size is one forward pass (so one
  set of BN statistics), the head sees all crops at once (``base.Net``'s
  ``small`` crops).
* ``config.swav``: the hyper-parameters above; ``config.head``: the MLP (its
  output without BN: ``head.last_bn`` False).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cvrl_jax import losses, models, parallel
from cvrl_jax.methods import base

PROTOTYPES = "prototypes"
NUM_ASSIGN = 2  # codes come from the two large crops


class SwAVHead(nn.Module):
  """MLP projection -> L2 normalisation -> prototype scores; returns (z, scores)."""
  projector: nn.Module
  num_prototypes: int

  @nn.compact
  def __call__(self, h: jax.Array, train: bool):
    z, _ = self.projector(h, train=train)
    z = losses.l2_normalize(z)
    return z, nn.Dense(self.num_prototypes, use_bias=False, name=PROTOTYPES)(z)


def normalize_prototypes(params: Any) -> Any:
  """Every prototype (a column of the kernel) back to unit length."""
  head = params[base.HEAD]
  kernel = losses.l2_normalize(head[PROTOTYPES]["kernel"], axis=0)
  return {**params, base.HEAD: {**head, PROTOTYPES: {"kernel": kernel}}}


class SwAV(base.Method):
  defaults = {
      "swav": dict(num_prototypes=3000, temperature=0.1, epsilon=0.05, sinkhorn_iterations=3,
                   freeze_prototypes_steps=313,
                   queue_size=0,  # 0: no queue; else embeddings per large crop
                   queue_start_epochs=15.0),
      "head": dict(last_bn=False)}  # a linear projection, L2-normalised in SwAVHead

  def __init__(self, config, num_classes, total_steps):
    super().__init__(config, num_classes, total_steps)
    s = config.swav
    self.queue_start = (round(s.queue_start_epochs * base.steps_per_epoch(config, total_steps))
                        if s.queue_size else 0)
    if s.queue_size and s.queue_size < config.batch_size:
      raise ValueError(f"swav.queue_size={s.queue_size} is smaller than the global batch "
                       f"({config.batch_size}): the queue must hold a batch of embeddings.")

  def net(self, axis_name):
    head = SwAVHead(base.mlp(self.config.head, axis_name), self.config.swav.num_prototypes)
    return base.Net(models.make_encoder(self.config.model, axis_name), head,
                    num_classes=self.num_classes)

  def init(self, rng, images):
    params, batch_stats, extra = super().init(rng, images)
    if self.config.swav.queue_size:
      dim = self.config.head.output_dim
      extra = {"queue": jnp.zeros((NUM_ASSIGN, self.config.swav.queue_size, dim)),
               "queue_ptr": jnp.zeros((), jnp.int32), "queue_full": jnp.zeros((), bool)}
    return normalize_prototypes(params), batch_stats, extra

  def project_params(self, params):
    return normalize_prototypes(params)

  def _codes(self, scores: jax.Array, crop: int, extra: dict, params: Any,
             axis_name: Optional[str]) -> jax.Array:
    """Codes of this device's samples of large crop ``crop``, with the queue's rows."""
    s = self.config.swav
    run = lambda x, w=None: losses.sinkhorn(x, epsilon=s.epsilon, num_iters=s.sinkhorn_iterations,
                                            axis_name=axis_name, weights=w)
    if not s.queue_size:
      return run(scores)
    devices = parallel.axis_size(axis_name)
    if s.queue_size % devices:
      raise ValueError(f"swav.queue_size={s.queue_size} does not split over {devices} "
                       "devices (each uses its own rows of it in Sinkhorn).")
    rows = s.queue_size // devices
    queued = parallel.own_rows(extra["queue"][crop], rows, axis_name)
    queue_scores = queued @ params[base.HEAD][PROTOTYPES]["kernel"]
    weights = jnp.concatenate([jnp.broadcast_to(extra["queue_full"], (rows,)),
                               jnp.ones(scores.shape[0], bool)]).astype(jnp.float32)
    return run(jnp.concatenate([queue_scores, scores]), weights)[rows:]

  def _enqueue(self, extra: dict, z: list[jax.Array], step: jax.Array,
               axis_name: Optional[str]) -> dict:
    """The large crops' embeddings of the global batch into the queue, from
    ``queue_start`` on; full once a whole queue of them went in."""
    if not self.config.swav.queue_size:
      return extra
    embeddings = jnp.stack([parallel.gather(lax.stop_gradient(x), axis_name, invariant=True)
                            for x in z])
    queue, ptr = jax.vmap(base.enqueue, in_axes=(0, None, 0))(
        extra["queue"], extra["queue_ptr"], embeddings)
    on = step >= self.queue_start
    # The pointer starts at 0: the queue is full once it first wraps around.
    wraps = extra["queue_ptr"] + embeddings.shape[1] >= self.config.swav.queue_size
    full = extra["queue_full"] | (on & wraps)
    return {"queue": jnp.where(on, queue, extra["queue"]),
            "queue_ptr": jnp.where(on, ptr[0], extra["queue_ptr"]), "queue_full": full}

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng
    s, views, small = self.config.swav, batch["views"], batch.get("small_views", ())
    params = base.freeze(params, (base.HEAD, PROTOTYPES), step < s.freeze_prototypes_steps)
    (_, (z, scores), _, logits), batch_stats = base.apply_together(self.net(axis_name), params,
                                                                   batch_stats, views, small)
    n = views[0].shape[0]
    scores = jnp.split(scores, len(views) + len(small))
    z_assign = jnp.split(z[:NUM_ASSIGN * n], NUM_ASSIGN)
    codes = [self._codes(scores[i], i, extra, params, axis_name) for i in range(NUM_ASSIGN)]
    loss = losses.swapped_prediction(codes, scores, temperature=s.temperature)
    # How evenly the batch uses the prototypes: the entropy of the mean code (log K at best).
    mean_code = parallel.pmean(jnp.mean(codes[0], axis=0), axis_name)
    return base.with_probe(parallel.pmean(loss, axis_name), logits[:n], batch["label"],
                           axis_name, batch_stats, self._enqueue(extra, z_assign, step, axis_name),
                           code_entropy=-jnp.sum(mean_code * jnp.log(mean_code + 1e-12)))


METHODS = {"swav": SwAV}
