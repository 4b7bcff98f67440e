"""CPC v2: the patch grid and its pooled representation, the LayerNorm ResNet, the
masked context network (blind to the rows below), the loss against hand-worked
values and on 8 devices, the per-patch augmentations, training on 1 and 8
devices, every preset, and what export does with a CPC encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cpc as cpc_config
from cvrl_jax import losses, methods
from cvrl_jax.methods import cpc
from cvrl_jax.models import ResNet, make_encoder
from cvrl_jax.models.patches import PatchEncoder, cut_patches
from cvrl_jax.tools import export
from helpers import on_mesh, preset_shapes, same_on_one_and_eight_devices, train_steps

TINY_RESNET = dict(depth=18, width_multiplier=0.125, stem="cifar")


def tiny_config():
  """The cpu preset at 16 px: 8 px patches every 4 px (a 3 x 3 grid), offsets 1
  and 2, a narrow context network, 3 steps of 16 images at a visible Adam rate."""
  c = cpc_config.get_config("cpu")
  c.update(image_size=16, batch_size=16, total_steps=3)
  c.model.width_multiplier = 0.125
  c.cpc.update(offsets=(1, 2), context_blocks=2, context_width=16, target_dim=8)
  c.optimizer.update(base_lr=1e-2, warmup_epochs=0.0)
  return c


def images(n=4, size=16, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(n, size, size, 3)), jnp.float32)


def test_patch_grid_cuts_overlapping_patches_and_pools_their_features():
  x = images()
  patches = cut_patches(x, 8, 4)
  assert patches.shape == (4, 3, 3, 8, 8, 3)
  np.testing.assert_array_equal(patches[:, 1, 2], x[:, 4:12, 8:16])
  backbone = ResNet(norm="layer", **TINY_RESNET)
  encoder = PatchEncoder(backbone, 8, 4)
  variables = encoder.init(jax.random.PRNGKey(0), x, train=False)
  # The ResNet's own names, not nested under the wrapper.
  plain = backbone.init(jax.random.PRNGKey(0), x[:, :8, :8], train=False)
  assert jax.tree.structure(variables) == jax.tree.structure(plain)
  grid = encoder.apply(variables, x, train=False, grid=True)
  assert grid.shape == (4, 3, 3, 64)
  np.testing.assert_allclose(grid[:, 1, 2], backbone.apply(variables, x[:, 4:12, 8:16],
                                                           train=False), rtol=1e-5, atol=1e-6)
  pooled = encoder.apply(variables, x, train=False)
  np.testing.assert_allclose(pooled, grid.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="does not fit in 16 px"):
    cut_patches(x, 20, 4)


def test_layer_norm_resnet_keeps_the_names_has_no_statistics_and_mixes_no_samples():
  x = images()
  batch_norm = ResNet(**TINY_RESNET).init(jax.random.PRNGKey(0), x, train=False)
  layer = ResNet(norm="layer", **TINY_RESNET)
  variables = layer.init(jax.random.PRNGKey(0), x, train=False)
  assert set(variables) == {"params"} and "batch_stats" in batch_norm
  assert jax.tree.structure(variables["params"]) == jax.tree.structure(batch_norm["params"])
  # Training mode: a sample's features do not depend on the rest of the batch.
  alone = layer.apply(variables, x[:1], train=True)
  together = layer.apply(variables, x, train=True)
  np.testing.assert_allclose(alone, together[:1], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="norm='group'"):
    ResNet(norm="group", **TINY_RESNET).init(jax.random.PRNGKey(0), x, train=False)


def test_context_network_sees_the_rows_above_and_its_own_only():
  net = cpc.MaskedContext(blocks=2, width=8)
  z = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 4, 6)), jnp.float32)
  variables = net.init(jax.random.PRNGKey(0), z)
  for row in range(5):
    g = jax.grad(lambda z: jnp.sum(net.apply(variables, z)[:, row]))(z)
    seen = np.abs(np.asarray(g)).sum(axis=(0, 2, 3))  # per input row
    assert np.all(seen[row + 1:] == 0), (row, seen)
    assert np.all(seen[max(0, row - 2):row + 1] > 0), (row, seen)  # 2 blocks: 2 rows up


def test_cpc_infonce_hand_worked():
  # Two images, a 2 x 1 grid, 1-d embeddings; offset 1: each image's row 0 predicts
  # its row 1 among the 4 patches of the batch. Targets: image 0 (0, ln 3), image 1
  # (0, 0); both predictions 1. Image 0: logits (0, ln 3, 0, 0), positive ln 3:
  # log(6) - ln 3 = ln 2. Image 1: same logits, positive column 3 (logit 0): ln 6.
  targets = jnp.array([[[[0.0]], [[np.log(3.0)]]], [[[0.0]], [[0.0]]]])
  predictions = jnp.ones((2, 2, 1, 1))
  loss = losses.cpc_infonce([predictions], targets, offsets=(1,))
  np.testing.assert_allclose(loss, (np.log(2.0) + np.log(6.0)) / 2, rtol=1e-6)
  # Two offsets add; a row without a target k rows below is no anchor.
  assert float(losses.cpc_infonce([predictions] * 2, targets, offsets=(1, 1))) == \
      pytest.approx(2 * float(loss))
  with pytest.raises(ValueError, match="offset 2 needs 0 < k < 2"):
    losses.cpc_infonce([predictions], targets, offsets=(2,))


def test_cpc_infonce_over_8_devices_equals_single_device():
  rng = np.random.default_rng(2)
  p1, p2, t = (jnp.asarray(rng.normal(size=(16, 4, 3, 5)), jnp.float32) for _ in range(3))
  loss = lambda p1, p2, t, axis_name=None: losses.cpc_infonce(
      [p1, p2], t, offsets=(1, 3), axis_name=axis_name)
  per_device = on_mesh(lambda *a: loss(*a)[None], 8, p1, p2, t)
  assert per_device.shape == (8,) and np.std(per_device) > 1e-3
  np.testing.assert_allclose(per_device.mean(), loss(p1, p2, t), rtol=1e-5)

  def grads(p1, p2, t, axis_name):  # of the mesh-mean loss, each device's rows
    mean = lambda *a: jax.lax.pmean(loss(*a, axis_name=axis_name), axis_name)
    return jax.grad(mean, (0, 1, 2))(p1, p2, t)

  g8 = on_mesh(grads, 8, p1, p2, t)
  for a, b in zip(g8, jax.grad(loss, (0, 1, 2))(p1, p2, t), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_patch_augmentations_flip_drop_colour_and_jitter_each_patch_by_its_image():
  x = cut_patches(images(n=3), 8, 4) + 0.1  # no pixel is 0 before the augmentation
  aug = lambda x, rows, **kw: cpc.augment_patches(x, jax.random.PRNGKey(0), rows, **{
      "flip_p": 0.0, "color_drop_p": 0.0, "jitter": 0, **kw})
  np.testing.assert_array_equal(aug(x, jnp.arange(3)), x)
  np.testing.assert_array_equal(aug(x, jnp.arange(3), flip_p=1.0), x[:, :, :, :, ::-1])
  dropped = np.asarray(aug(x, jnp.arange(3), color_drop_p=1.0))
  kept = (np.abs(dropped).sum(axis=(3, 4)) > 0).sum(-1)  # channels left per patch
  assert np.all(kept == 1)
  assert len(np.unique(np.argmax(np.abs(dropped).sum(axis=(3, 4)), -1))) > 1
  jittered = np.asarray(aug(x, jnp.arange(3), jitter=2))
  rows_kept = (np.abs(jittered).sum(axis=(4, 5)) > 0).sum(-1)
  assert np.all(rows_kept == 6)  # 8 - 2 rows of each patch
  # Each image's draws come from its row of the global batch, not its position here.
  every = aug(x, jnp.arange(3), flip_p=0.5, color_drop_p=0.5, jitter=2)
  np.testing.assert_array_equal(aug(x[2:], jnp.array([2]), flip_p=0.5, color_drop_p=0.5,
                                    jitter=2), every[2:])


def test_loss_is_cpc_infonce_of_the_network_and_the_representation_is_pooled():
  c = tiny_config()
  method = methods.get_method(c, num_classes=10, total_steps=10)
  x = images(n=8)
  params, batch_stats, extra = method.init(jax.random.PRNGKey(1), x)
  assert batch_stats == {} and set(params) == {"encoder", "context", "target", "predict",
                                               "probe"}
  batch = {"views": (x,), "label": jnp.arange(8) % 10}
  _, (_, _, metrics) = method.loss(params, batch_stats, extra, batch, jax.random.PRNGKey(2),
                                   0, None)
  augment = lambda p: cpc.augment_patches(p, jax.random.PRNGKey(2), jnp.arange(8),
                                          flip_p=0.5, color_drop_p=0.5, jitter=1)
  _, t, preds, _ = method.net(None).apply({"params": params}, x, augment=augment)
  expected = losses.cpc_infonce([0.1 * p for p in preds], t, offsets=(1, 2))
  np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
  h = method.features(params, batch_stats, x)
  z, *_ = method.net(None).apply({"params": params}, x, train=False)
  assert h.shape == (8, 64)
  np.testing.assert_allclose(h, z.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
  # What evaluations and export build from config.model gives the same features.
  encoder = make_encoder(c.model, None)
  np.testing.assert_allclose(encoder.apply({"params": params["encoder"]}, x, train=False), h,
                             rtol=1e-6)


def test_one_and_eight_devices_give_the_same_steps():
  """Candidates from the global batch, augmentations keyed by the global row, no
  BatchNorm: the same losses and states on any mesh."""
  _, history = same_on_one_and_eight_devices(lambda n: train_steps(tiny_config(), n))
  assert history[-1]["loss"] < history[0]["loss"]


def test_every_preset_builds_with_its_grid():
  grids = {}
  for c, params, extra in preset_shapes(cpc_config):
    assert c.num_views == 1 and c.model.norm == "layer" and extra == {}
    size, stride = c.model.patch_grid
    grids[c.image_size, size, stride] = (c.image_size - size) // stride + 1
    assert params["predict"]["kernel"].shape[-1] == len(c.cpc.offsets) * c.cpc.target_dim
  assert grids == {(256, 64, 32): 7, (32, 8, 4): 7}
  c = cpc_config.get_config("cpu")
  assert (c.total_steps, c.batch_size, c.model.width_multiplier) == (500, 128, 0.25)


def test_a_cpc_config_is_refused_without_its_grid_or_with_offsets_past_it():
  c = cpc_config.get_config("cpu")
  c.model.patch_grid = (0, 0)
  with pytest.raises(ValueError, match="set --config.model.patch_grid"):
    methods.get_method(c, 10, 10)
  c = cpc_config.get_config("cpu")
  c.cpc.offsets = (3, 7)
  with pytest.raises(ValueError, match=r"cpc.offsets=\(3, 7\): each must be in 1..6"):
    methods.get_method(c, 10, 10)


def test_export_keeps_the_encoder_in_the_cvrl_layout_and_refuses_torchvision():
  c = tiny_config()
  method = methods.get_method(c, num_classes=10, total_steps=10)
  x = images(n=2)
  params, batch_stats, _ = method.init(jax.random.PRNGKey(1), x)
  flat = export.flatten(*export.encoder_variables(params, batch_stats))
  assert "stem_bn/scale" in flat and not any(k.endswith(("/mean", "/var")) for k in flat)
  rebuilt = export.unflatten(flat)
  out = make_encoder(c.model, None).apply({"params": rebuilt["params"]}, x, train=False)
  np.testing.assert_allclose(out, method.features(params, batch_stats, x), rtol=1e-6)
  c.model.width_multiplier = 1.0  # else refused for its width first
  with pytest.raises(ValueError, match="norm='layer'.*Export to .npz"):
    export.check_torchvision_compatible(c.model)
  c.model.norm = "batch"
  with pytest.raises(ValueError, match=r"patch_grid=\(8, 4\).*Export to .npz"):
    export.check_torchvision_compatible(c.model)
