"""NNCLR (Dwibedi et al. 2021, "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations").

SimSiam's network shape (encoder -> projector -> predictor) trained
contrastively, where the positive of a view is not the other view of its image
but the nearest neighbour, in a support set Q of earlier projections, of that
other view's projection (``losses.nnclr_loss``):

    L = L(NN(z1, Q), p2) / 2 + L(NN(z2, Q), p1) / 2,
    L(nn, p) = mean_i -log softmax_i(nn_i . p_j / tau over j in the global batch),

with every vector L2-normalised and tau = ``nnclr.temperature`` (0.1). The
neighbour is a constant (it comes from Q); the gradient reaches the network
through the predictions ``p``. Each view goes through the network separately,
one BatchNorm group per view synchronised over the mesh.

State: Q is a FIFO queue (``nnclr.queue_size``: 98,304 on ImageNet) of the
view-1 projections of the most recent global batches, in ``extra``, with the
labels of its rows, used only for the ``nn_top1`` monitor (how often the
neighbour has the anchor's class). It receives the gathered projections of the
whole global batch, so it is the same on every device and checkpointed with the
state. Each device looks up the neighbours of its own rows in that common Q and
contrasts them with the predictions gathered over the mesh: the mean of the
devices' losses is the single-device loss of the global batch.
"""

import jax
import jax.numpy as jnp
from jax import lax

from cvrl_jax import losses, parallel
from cvrl_jax.methods import base


def nearest_neighbour(z: jax.Array, support: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(rows of ``support`` most cosine-similar to each row of ``z``, their indices);
  ``support`` rows are unit length."""
  index = jnp.argmax(losses.l2_normalize(z) @ support.T, axis=-1)
  return lax.stop_gradient(support[index]), index


class NNCLR(base.Method):
  defaults = {"nnclr": dict(queue_size=98_304, temperature=0.1)}

  def net(self, axis_name):
    return base.mlp_net(self.config, axis_name, self.num_classes, predictor=True)

  def init(self, rng, images):
    net_rng, queue_rng = jax.random.split(rng)
    params, batch_stats, _ = super().init(net_rng, images)
    size, dim = self.config.nnclr.queue_size, self.config.head.output_dim
    return params, batch_stats, {
        "queue": base.random_unit_rows(queue_rng, size, dim),
        "queue_labels": jnp.full((size,), -1, jnp.int32), "queue_ptr": jnp.zeros((), jnp.int32)}

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    labels = batch["label"]
    (_, (z, _), p, logits), batch_stats = base.apply_per_view(
        self.net(axis_name), params, batch_stats, batch["views"])
    (z1, z2), (p1, p2) = jnp.split(z, 2), jnp.split(p, 2)
    (nn1, index), (nn2, _) = (nearest_neighbour(v, extra["queue"]) for v in (z1, z2))
    ctr = lambda nn, p: losses.nnclr_loss(nn, p, temperature=self.config.nnclr.temperature,
                                          axis_name=axis_name)
    loss = parallel.pmean(0.5 * (ctr(nn1, p2) + ctr(nn2, p1)), axis_name)
    nn_top1 = parallel.pmean(100.0 * jnp.mean(extra["queue_labels"][index] == labels), axis_name)
    # FIFO: view 1's projections of the whole global batch join the support set.
    everyone = lambda x: parallel.gather(x, axis_name, invariant=True)
    queue, ptr = base.enqueue(extra["queue"], extra["queue_ptr"],
                              everyone(lax.stop_gradient(losses.l2_normalize(z1))))
    queue_labels, _ = base.enqueue(extra["queue_labels"], extra["queue_ptr"], everyone(labels))
    extra = {"queue": queue, "queue_labels": queue_labels, "queue_ptr": ptr}
    return base.with_probe(loss, logits[:z1.shape[0]], labels, axis_name, batch_stats, extra,
                           nn_top1=nn_top1)


METHODS = {"nnclr": NNCLR}
