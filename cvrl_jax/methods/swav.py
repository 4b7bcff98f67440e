"""SwAV (Caron et al. 2020): swapped prediction of equal-partition cluster codes.

Every crop of an image goes through encoder -> MLP -> L2 normalisation -> a
linear layer of K unit-length prototypes, giving scores ``z . c_k``. For each of
the two large crops, Sinkhorn-Knopp turns the scores of the *global* batch into
soft codes that use every prototype equally (``sinkhorn``); every other crop
predicts those codes with a softmax of its own scores (``swapped_prediction``).
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
  set of BN statistics), the head sees all crops at once (``MultiCropNet``).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from cvrl_jax import losses, models
from cvrl_jax.methods import base
from cvrl_jax.methods.moco import enqueue
from cvrl_jax.models.heads import MLPHead

PROTOTYPES = "prototypes"
NUM_ASSIGN = 2  # codes come from the two large crops


class MultiCropNet(nn.Module):
  """Encoder once per crop size, one head over all crops; the online probe on the
  first crops' stop-gradient features (``num_classes=0``: no probe, a target net).

  Returns ``head(h)`` for the crops in order [large..., small...], and the probe's
  logits for the large crops.
  """
  encoder: nn.Module
  head: nn.Module
  num_classes: int = 0

  @nn.compact
  def __call__(self, large: jax.Array, small: Optional[jax.Array] = None,
               train: bool = True):
    h_large = self.encoder(large, train=train)
    h = h_large if small is None else jnp.concatenate(
        [h_large, self.encoder(small, train=train)])
    out = self.head(h, train=train)
    if not self.num_classes:
      return out
    return out, nn.Dense(self.num_classes, name="probe")(lax.stop_gradient(h_large))


def crops(batch: dict) -> tuple[jax.Array, Optional[jax.Array], int]:
  """(large crops stacked, small crops stacked or None, number of crops)."""
  small = batch.get("small_views", ())
  return (jnp.concatenate(batch["views"]),
          jnp.concatenate(small) if small else None, len(batch["views"]) + len(small))


def psum(x: jax.Array, axis_name: Optional[str]) -> jax.Array:
  return x if axis_name is None else lax.psum(x, axis_name)


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
  head = params["head"]
  kernel = losses.l2_normalize(head[PROTOTYPES]["kernel"], axis=0)
  return {**params, "head": {**head, PROTOTYPES: {"kernel": kernel}}}


def sinkhorn(scores: jax.Array, *, epsilon: float, num_iters: int,
             axis_name: Optional[str] = None,
             weights: Optional[jax.Array] = None) -> jax.Array:
  """Equal-partition soft codes of the samples of the global batch (Sinkhorn-Knopp).

  Args:
    scores: this device's samples' prototype scores, (n, K).
    epsilon: entropy weight; ``Q = exp(scores / epsilon)`` before balancing.
    num_iters: alternations of "every prototype holds 1/K of the mass" and
      "every sample holds 1/B" (B: samples of the global batch).
    axis_name: mesh axis of the batch; the sums over samples run across it.
    weights: 1 for samples to partition, 0 for rows to leave out (an unfilled
      queue), (n,); default all ones.

  Returns:
    The codes, (n, K): each counted sample's row sums to 1, and summed over the
    global batch each prototype receives B / K; no gradient.
  """
  scores = lax.stop_gradient(scores.astype(jnp.float32))
  if weights is None:
    weights = jnp.ones(scores.shape[0], jnp.float32)
  # Shifting by the global max changes nothing after normalising; it keeps exp finite.
  top = jnp.max(scores) if axis_name is None else lax.pmax(jnp.max(scores), axis_name)
  q = jnp.exp((scores - top) / epsilon) * weights[:, None]
  num_samples, num_prototypes = psum(jnp.sum(weights), axis_name), scores.shape[1]
  q = q / psum(jnp.sum(q), axis_name)
  for _ in range(num_iters):
    q = q / (psum(jnp.sum(q, axis=0), axis_name) * num_prototypes)
    per_sample = jnp.sum(q, axis=1, keepdims=True)
    q = q / (jnp.where(per_sample > 0, per_sample, 1.0) * num_samples)
  return q * num_samples


def swapped_prediction(codes: list[jax.Array], scores: list[jax.Array], *,
                       temperature: float) -> jax.Array:
  """SwAV's loss: every crop predicts the codes of every *other* assigned crop.

  ``codes[i]`` (n, K) are crop i's codes (crops 0.. len(codes)-1 are the large
  ones); ``scores[v]`` (n, K) crop v's prototype scores. The mean over the
  assigned crops of the mean over the other crops of the cross-entropy
  ``-sum_k q_k log softmax(scores / temperature)_k``, averaged over the n local
  samples (``pmean`` over the mesh gives the global batch's).
  """
  log_p = [jax.nn.log_softmax(s.astype(jnp.float32) / temperature) for s in scores]
  total = 0.0
  for i, q in enumerate(codes):
    others = [jnp.mean(jnp.sum(-q * lp, axis=-1)) for v, lp in enumerate(log_p) if v != i]
    total += sum(others) / len(others)
  return total / len(codes)


def freeze(params: Any, path: tuple[str, ...], frozen: jax.Array) -> Any:
  """``params`` whose sub-tree at ``path`` has zero gradient while ``frozen``."""
  if not path:
    return jax.tree.map(lambda p: jnp.where(frozen, lax.stop_gradient(p), p), params)
  return {**params, path[0]: freeze(params[path[0]], path[1:], frozen)}


def encoder_features(config: ml_collections.ConfigDict, params: Any, batch_stats: Any,
                     images: jax.Array) -> jax.Array:
  """The encoder's output in eval mode: the representation kNN and probes see."""
  variables = {"params": params["encoder"]}
  if "encoder" in batch_stats:
    variables["batch_stats"] = batch_stats["encoder"]
  return models.make_encoder(config.model, None).apply(variables, images, train=False)


class SwAV(base.Method):

  def __init__(self, config, num_classes, total_steps):
    super().__init__(config, num_classes, total_steps)
    s = config.swav
    self.queue_start = (round(s.queue_start_epochs * base.steps_per_epoch(config, total_steps))
                        if s.queue_size else 0)
    if s.queue_size and s.queue_size < config.batch_size:
      raise ValueError(f"swav.queue_size={s.queue_size} is smaller than the global batch "
                       f"({config.batch_size}): the queue must hold a batch of embeddings.")

  def _net(self, axis_name: Optional[str]) -> MultiCropNet:
    head = self.config.head
    dims = [head.hidden_dim] * (head.num_layers - 1) + [head.output_dim]
    projector = MLPHead(dims, last_bn=False, axis_name=axis_name)
    return MultiCropNet(models.make_encoder(self.config.model, axis_name),
                        SwAVHead(projector, self.config.swav.num_prototypes), self.num_classes)

  def init(self, rng, images):
    variables = self._net(None).init(rng, images, train=False)
    extra = {}
    if self.config.swav.queue_size:
      dim = self.config.head.output_dim
      extra = {"queue": jnp.zeros((NUM_ASSIGN, self.config.swav.queue_size, dim)),
               "queue_ptr": jnp.zeros((), jnp.int32), "queue_full": jnp.zeros((), bool)}
    return normalize_prototypes(variables["params"]), variables.get("batch_stats", {}), extra

  def project_params(self, params):
    return normalize_prototypes(params)

  def _codes(self, scores: jax.Array, crop: int, extra: dict, params: Any,
             axis_name: Optional[str]) -> jax.Array:
    """Codes of this device's samples of large crop ``crop``, with the queue's rows."""
    s = self.config.swav
    run = lambda x, w=None: sinkhorn(x, epsilon=s.epsilon, num_iters=s.sinkhorn_iterations,
                                     axis_name=axis_name, weights=w)
    if not s.queue_size:
      return run(scores)
    devices = 1 if axis_name is None else lax.axis_size(axis_name)
    if s.queue_size % devices:
      raise ValueError(f"swav.queue_size={s.queue_size} does not split over {devices} "
                       "devices (each uses its own rows of it in Sinkhorn).")
    rows = s.queue_size // devices
    start = 0 if axis_name is None else lax.axis_index(axis_name) * rows
    queued = lax.dynamic_slice_in_dim(extra["queue"][crop], start, rows)
    queue_scores = queued @ params["head"][PROTOTYPES]["kernel"]
    weights = jnp.concatenate([jnp.broadcast_to(extra["queue_full"], (rows,)),
                               jnp.ones(scores.shape[0], bool)]).astype(jnp.float32)
    return run(jnp.concatenate([queue_scores, scores]), weights)[rows:]

  def _enqueue(self, extra: dict, z: list[jax.Array], step: jax.Array,
               axis_name: Optional[str]) -> dict:
    """The large crops' embeddings of the global batch into the queue, from
    ``queue_start`` on; full once a whole queue of them went in."""
    if not self.config.swav.queue_size:
      return extra
    gather = lambda x: x if axis_name is None else lax.all_gather(
        x, axis_name, tiled=True, to="invarying")
    embeddings = jnp.stack([gather(lax.stop_gradient(x)) for x in z])
    queue, ptr = jax.vmap(enqueue, in_axes=(0, None, 0))(
        extra["queue"], extra["queue_ptr"], embeddings)
    on = step >= self.queue_start
    # The pointer starts at 0: the queue is full once it first wraps around.
    wraps = extra["queue_ptr"] + embeddings.shape[1] >= self.config.swav.queue_size
    full = extra["queue_full"] | (on & wraps)
    return {"queue": jnp.where(on, queue, extra["queue"]),
            "queue_ptr": jnp.where(on, ptr[0], extra["queue_ptr"]), "queue_full": full}

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng
    s = self.config.swav
    large, small, num_crops = crops(batch)
    params = freeze(params, ("head", PROTOTYPES), step < s.freeze_prototypes_steps)
    ((z, scores), logits), updates = self._net(axis_name).apply(
        {"params": params, "batch_stats": batch_stats}, large, small, train=True,
        mutable=["batch_stats"])
    n = batch["label"].shape[0]
    scores = jnp.split(scores, num_crops)
    z_assign = jnp.split(z[:NUM_ASSIGN * n], NUM_ASSIGN)
    codes = [self._codes(scores[i], i, extra, params, axis_name) for i in range(NUM_ASSIGN)]
    loss = base.pmean(swapped_prediction(codes, scores, temperature=s.temperature), axis_name)
    probe_loss, metrics = base.probe_loss_and_metrics(logits[:n], batch["label"], axis_name)
    extra = self._enqueue(extra, z_assign, step, axis_name)
    # How evenly the batch uses the prototypes: the entropy of the mean code (log K at best).
    mean_code = base.pmean(jnp.mean(codes[0], axis=0), axis_name)
    metrics.update(loss=loss, code_entropy=-jnp.sum(mean_code * jnp.log(mean_code + 1e-12)))
    return loss + probe_loss, (updates.get("batch_stats", {}), extra, metrics)

  def features(self, params, batch_stats, images):
    return encoder_features(self.config, params, batch_stats, images)


METHODS = {"swav": SwAV}
