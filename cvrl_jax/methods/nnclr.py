"""NNCLR (Dwibedi et al. 2021, "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations").

SimSiam's network (encoder -> projector -> predictor, ``simsiam.SiameseNet``)
trained contrastively, where the positive of a view is not the other view of its
image but the nearest neighbour, in a support set Q of earlier projections, of
that other view's projection:

    L = L(NN(z1, Q), p2) / 2 + L(NN(z2, Q), p1) / 2,
    L(nn, p) = mean_i -log softmax_i(nn_i . p_j / tau over j in the global batch),

with every vector L2-normalised and tau = 0.1. The neighbour is a constant (it
comes from Q); the gradient reaches the network through the predictions ``p``.

State: Q is a FIFO queue of the view-1 projections of the most recent global
batches (98,304 on ImageNet), in ``extra`` like MoCo's queue of keys
(``moco.enqueue``), with the labels of its rows, used only for the
``nn_top1`` monitor (how often the neighbour has the anchor's class). It
receives the gathered projections of the whole global batch, so it is the same
on every device and checkpointed with the state. Each device looks up the
neighbours of its own rows in that common Q and contrasts them with the
predictions gathered over the mesh: the mean of the devices' losses is the
single-device loss of the global batch.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import optax
from jax import lax

from cvrl_jax import losses
from cvrl_jax.methods import base, moco, simsiam


def nearest_neighbour(z: jax.Array, support: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(rows of ``support`` most cosine-similar to each row of ``z``, their indices);
  ``support`` rows are unit length."""
  index = jnp.argmax(losses.l2_normalize(z) @ support.T, axis=-1)
  return lax.stop_gradient(support[index]), index


def nnclr_loss(nn: jax.Array, p: jax.Array, *, temperature: float,
               axis_name: Optional[str] = None) -> jax.Array:
  """Cross-entropy of ``nn_i . p_j / tau`` over the predictions ``p_j`` of the
  global batch, the positive being ``p_i``; the mean over the local rows.

  Args:
    nn: the nearest neighbours of one view's projections, (n, d).
    p: the other view's predictions of the same n images, (n, d); gathered over
      ``axis_name`` (and differentiated through the gather).
  """
  nn, p = losses.l2_normalize(nn), losses.l2_normalize(p)
  p_all = p if axis_name is None else lax.all_gather(p, axis_name, tiled=True)
  offset = 0 if axis_name is None else lax.axis_index(axis_name) * p.shape[0]
  labels = offset + jnp.arange(p.shape[0])
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      nn @ p_all.T / temperature, labels))


def _gather_invariant(x: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """The global batch as a value replicated on every device (queue entries)."""
  return x if axis_name is None else lax.all_gather(x, axis_name, tiled=True, to="invarying")


class NNCLR(base.Method):

  def _net(self, axis_name: Optional[str]) -> simsiam.SiameseNet:
    return simsiam.siamese_net(self.config, self.num_classes, axis_name)

  def init(self, rng, images):
    net_rng, queue_rng = jax.random.split(rng)
    variables = self._net(None).init(net_rng, images, train=False)
    size, dim = self.config.nnclr.queue_size, self.config.head.output_dim
    extra = {"queue": losses.l2_normalize(jax.random.normal(queue_rng, (size, dim))),
             "queue_labels": jnp.full((size,), -1, jnp.int32),
             "queue_ptr": jnp.zeros((), jnp.int32)}
    return variables["params"], variables["batch_stats"], extra

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    x1, x2 = batch["views"]
    (_, z, p, logits), batch_stats = moco.apply_in_groups(
        self._net(axis_name), {"params": params, "batch_stats": batch_stats},
        jnp.concatenate([x1, x2]), 2)
    (z1, z2), (p1, p2) = jnp.split(z, 2), jnp.split(p, 2)
    (nn1, index), (nn2, _) = (nearest_neighbour(v, extra["queue"]) for v in (z1, z2))
    ctr = lambda nn, p: nnclr_loss(nn, p, temperature=self.config.nnclr.temperature,
                                   axis_name=axis_name)
    loss = base.pmean(0.5 * (ctr(nn1, p2) + ctr(nn2, p1)), axis_name)
    probe_loss, metrics = base.probe_loss_and_metrics(logits[:x1.shape[0]], batch["label"],
                                                      axis_name)
    nn_top1 = 100.0 * jnp.mean(extra["queue_labels"][index] == batch["label"])
    metrics.update(loss=loss, nn_top1=base.pmean(nn_top1, axis_name))
    # FIFO: view 1's projections of the whole global batch join the support set.
    queue, ptr = moco.enqueue(extra["queue"], extra["queue_ptr"], _gather_invariant(
        lax.stop_gradient(losses.l2_normalize(z1)), axis_name))
    queue_labels, _ = moco.enqueue(extra["queue_labels"], extra["queue_ptr"],
                                   _gather_invariant(batch["label"], axis_name))
    extra = {"queue": queue, "queue_labels": queue_labels, "queue_ptr": ptr}
    return loss + probe_loss, (batch_stats, extra, metrics)

  def features(self, params, batch_stats, images):
    return simsiam.encoder_features(self.config, params, batch_stats, images)


METHODS = {"nnclr": NNCLR}
