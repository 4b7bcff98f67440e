"""The SimCLR method: its loss (NT-Xent or one of the options, each trained on 1 and
on 8 devices), its representation, and a probe that cannot leak."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import simclr_v2
from cvrl_jax import losses, methods
from cvrl_jax.models import feature_dim
from helpers import same_on_one_and_eight_devices, tiny_vit_config, train_steps


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


@pytest.mark.parametrize("name", ["nt_xent", "dcl", "nt_logistic", "margin_triplet"])
def test_contrastive_loss_is_the_configured_loss_of_the_projections(name):
  c, method, params, batch_stats, extra, batch = tiny()
  c.simclr.update(loss=name, margin=0.3)
  _, (_, _, metrics) = method.loss(params, batch_stats, extra, batch, None, 0, None)
  (_, (z, _), _, _), _ = method.net(None).apply(
      {"params": params, "batch_stats": batch_stats}, jnp.concatenate(batch["views"]),
      train=True, mutable=["batch_stats"])
  z1, z2 = jnp.split(z, 2)
  kwargs = dict(margin=0.3) if name == "margin_triplet" else dict(temperature=c.simclr.temperature)
  np.testing.assert_allclose(metrics["loss"], getattr(losses, name)(z1, z2, **kwargs), rtol=1e-6)


def test_representation_is_encoder_output_or_first_head_layer():
  c, method, params, batch_stats, _, batch = tiny()
  h = method.features(params, batch_stats, batch["views"][0])
  assert h.shape == (8, feature_dim(18, 0.125)) == (8, 64)
  c.simclr.representation_layer = 1
  assert method.features(params, batch_stats, batch["views"][0]).shape == (8, 32)


def test_an_unknown_loss_names_the_choices():
  c = simclr_v2.get_config("cpu")
  c.simclr.loss = "infonce"
  with pytest.raises(ValueError, match=r"simclr.loss='infonce' is not one of \['dcl', "
                                       r"'margin_triplet', 'nt_logistic', 'nt_xent'\]"):
    methods.get_method(c, num_classes=10, total_steps=10)


def test_dcl_trains_alike_on_one_and_eight_devices():
  """The options' negatives come from the global batch (tests/test_losses.py checks
  each): through the real step, the same training on any mesh. At the harness's
  default rate (1.0) DCL's loss climbs 4.26 -> 5.42 in two steps, which blows the
  1-vs-8 rounding up to 3.8e-4 relative on a 2-core AMD EPYC (the step-0 losses
  agree to 2e-7): 0.3 keeps the updates visible and the comparison well-posed."""
  config = tiny_vit_config(simclr_v2, base_lr=0.3)
  config.simclr.loss = "dcl"
  same_on_one_and_eight_devices(lambda n: train_steps(config, n))


@pytest.mark.parametrize("name", ["nt_logistic", "margin_triplet"])
def test_logistic_and_triplet_losses_train(name):
  config = tiny_vit_config(simclr_v2)
  config.simclr.loss = name
  (first, *_, last), history = train_steps(config, 8, steps=2)
  assert all(np.isfinite(m["loss"]) for m in history) and history[0] != history[1]
  kernel = lambda s: s.params["head"]["dense_0"]["kernel"]
  assert np.abs(kernel(first) - kernel(last)).max() > 0
