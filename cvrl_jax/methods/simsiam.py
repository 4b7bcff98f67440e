"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

One network, no negatives, no momentum encoder: each view's projection ``z`` goes
through a predictor to ``p``, and ``p`` of one view regresses onto the
stop-gradient ``z`` of the other,

    L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2,   D(p, z) = -cos(p, z),

averaged over the global batch. The stop-gradient is what prevents collapse
(the paper's section 4.1); the predictor is needed too (section 4.2).

Each view goes through the network separately, as in the reference code: two
BatchNorm groups, each synchronised over the mesh (``moco.apply_in_groups``). The
loss of an image involves only its own two views, so the mean of the devices'
losses is the loss of the global batch.

``SiameseNet`` and ``encoder_features`` are shared with NNCLR (``nnclr.py``).
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from cvrl_jax import losses, models
from cvrl_jax.methods import base, moco
from cvrl_jax.models.heads import MLPHead


class SiameseNet(nn.Module):
  """Encoder -> projector -> predictor; plus the online probe on the features.

  Returns (features h, projection z, prediction p, probe logits).
  """
  encoder: nn.Module
  head: nn.Module
  predictor: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, images: jax.Array, train: bool):
    h = self.encoder(images, train=train)
    z, _ = self.head(h, train=train)
    p, _ = self.predictor(z, train=train)
    logits = nn.Dense(self.num_classes, name="probe")(lax.stop_gradient(h))
    return h, z, p, logits


def siamese_net(config: ml_collections.ConfigDict, num_classes: int,
                axis_name: Optional[str]) -> SiameseNet:
  """``config.head`` (projector; ``last_bn``) and ``config.predictor`` (BN on
  its hidden layer only) on the configured encoder."""
  head, pred = config.head, config.predictor
  projector = MLPHead([head.hidden_dim] * (head.num_layers - 1) + [head.output_dim],
                      last_bn=head.get("last_bn", True), axis_name=axis_name)
  predictor = MLPHead([pred.hidden_dim] * (pred.num_layers - 1) + [head.output_dim],
                      last_bn=False, axis_name=axis_name)
  return SiameseNet(models.make_encoder(config.model, axis_name), projector, predictor, num_classes)


def encoder_features(config: ml_collections.ConfigDict, params: base.Params,
                     batch_stats: base.Params, images: jax.Array) -> jax.Array:
  """The encoder's output in eval mode, from the parameters under ``encoder``."""
  variables = {"params": params["encoder"]}
  if "encoder" in batch_stats:
    variables["batch_stats"] = batch_stats["encoder"]
  return models.make_encoder(config.model, None).apply(variables, images, train=False)


def global_std(z: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """Mean over dimensions of the per-dimension std of ``z`` over the global batch."""
  mean = base.pmean(jnp.mean(z, axis=0), axis_name)
  var = base.pmean(jnp.mean(jnp.square(z - mean), axis=0), axis_name)
  return jnp.mean(jnp.sqrt(var))


def negative_cosine(p: jax.Array, z: jax.Array) -> jax.Array:
  """SimSiam's D(p, z) = -mean_i cos(p_i, z_i); ``z`` is not differentiated."""
  z = lax.stop_gradient(z)
  return -jnp.mean(jnp.sum(losses.l2_normalize(p) * losses.l2_normalize(z), axis=-1))


def simsiam_loss(p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array) -> jax.Array:
  """The symmetric loss ``D(p1, z2) / 2 + D(p2, z1) / 2``, in [-1, 1]."""
  return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))


class SimSiam(base.Method):

  def init(self, rng, images):
    variables = siamese_net(self.config, self.num_classes, None).init(rng, images, train=False)
    return variables["params"], variables["batch_stats"], {}

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    x1, x2 = batch["views"]
    (_, z, p, logits), batch_stats = moco.apply_in_groups(
        siamese_net(self.config, self.num_classes, axis_name),
        {"params": params, "batch_stats": batch_stats}, jnp.concatenate([x1, x2]), 2)
    (z1, z2), (p1, p2) = jnp.split(z, 2), jnp.split(p, 2)
    loss = base.pmean(simsiam_loss(p1, p2, z1, z2), axis_name)
    probe_loss, metrics = base.probe_loss_and_metrics(logits[:x1.shape[0]], batch["label"],
                                                      axis_name)
    # Collapse shows as a vanishing per-dimension std of the normalised output
    # (the paper's figure 2): 1/sqrt(d) when healthy, 0 when collapsed.
    metrics.update(loss=loss, z_std=global_std(losses.l2_normalize(z1), axis_name))
    return loss + probe_loss, (batch_stats, extra, metrics)

  def features(self, params, batch_stats, images):
    return encoder_features(self.config, params, batch_stats, images)


METHODS = {"simsiam": SimSiam}
