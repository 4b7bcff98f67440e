"""The SimCLR method: its loss, its representation, and a probe that cannot leak."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import simclr_v2
from cvrl_jax import losses, methods
from cvrl_jax.models import feature_dim


def tiny():
  c = simclr_v2.get_config("cpu")
  c.model.width_multiplier = 0.125
  c.head.update(hidden_dim=32, output_dim=16)
  method = methods.get_method(c, num_classes=10, total_steps=10)
  images = jax.random.uniform(jax.random.PRNGKey(0), (8, 16, 16, 3))
  params, batch_stats, extra = method.init(jax.random.PRNGKey(1), images)
  batch = {"views": (images, images[:, ::-1]), "label": jnp.arange(8) % 10}
  return c, method, params, batch_stats, extra, batch


def test_loss_is_nt_xent_plus_probe_and_probe_never_moves_the_encoder():
  c, method, params, batch_stats, extra, batch = tiny()
  (total, (_, _, metrics)), grads = jax.value_and_grad(method.loss, has_aux=True)(
      params, batch_stats, extra, batch, jax.random.PRNGKey(0), 0, None)
  np.testing.assert_allclose(total, metrics["loss"] + metrics["probe_loss"], rtol=1e-6)
  assert 0 <= metrics["probe_top1"] <= 100

  # Gradient of the probe's loss alone: nonzero for the probe, zero elsewhere.
  def probe_only(p):
    return method.loss(p, batch_stats, extra, batch, None, 0, None)[1][2]["probe_loss"]
  g = jax.grad(probe_only)(params)
  assert float(jnp.abs(g["probe"]["kernel"]).sum()) > 0
  others = [x for k, v in g.items() if k != "probe" for x in jax.tree.leaves(v)]
  assert all(float(jnp.abs(x).max()) == 0.0 for x in others)


def test_contrastive_loss_matches_nt_xent_of_the_projections():
  c, method, params, batch_stats, extra, batch = tiny()
  _, (_, _, metrics) = method.loss(params, batch_stats, extra, batch, None, 0, None)
  (_, (z, _), _, _), _ = method.net(None).apply(
      {"params": params, "batch_stats": batch_stats}, jnp.concatenate(batch["views"]),
      train=True, mutable=["batch_stats"])
  z1, z2 = jnp.split(z, 2)
  np.testing.assert_allclose(
      metrics["loss"], losses.nt_xent(z1, z2, temperature=c.simclr.temperature), rtol=1e-6)


def test_representation_is_encoder_output_or_first_head_layer():
  c, method, params, batch_stats, _, batch = tiny()
  h = method.features(params, batch_stats, batch["views"][0])
  assert h.shape == (8, feature_dim(18, 0.125)) == (8, 64)
  c.simclr.representation_layer = 1
  assert method.features(params, batch_stats, batch["views"][0]).shape == (8, 32)
