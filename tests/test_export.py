"""Export: the flat layout, its files, and torchvision models that compute the same features."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cmc, instdisc, moco_v2, moco_v3, simclr_v2, vicreg
from conftest import SHARED_TFDS
from cvrl_jax import config as config_lib, methods, models
from cvrl_jax.tools import export
from helpers import fake_workdir
from cvrl_jax.models import ResNet


def torch_and_torchvision():
  """(torch, torchvision), or skip: the round trips need both."""
  torch = pytest.importorskip(
      "torch", reason="torch is not installed (pip install -e '.[test]' installs the CPU build)")
  try:
    torchvision = export.import_torchvision()
  except ImportError as e:
    pytest.skip(f"torchvision cannot be imported ({e}); pip install -e '.[test]'")
  return torch, torchvision


def perturbed_variables(model: ResNet, image_shape, seed: int = 0) -> dict:
  """Random init, then random BN statistics and gammas (init has var 1 and zero gammas)."""
  variables = model.init(jax.random.PRNGKey(seed), jnp.zeros(image_shape), train=False)
  rng = np.random.default_rng(seed)

  def perturb(path, x):
    leaf = path[-1].key
    if leaf == "mean":
      return jnp.asarray(rng.normal(0, 0.2, x.shape), jnp.float32)
    if leaf in ("var", "scale"):
      return jnp.asarray(rng.uniform(0.5, 1.5, x.shape), jnp.float32)
    if leaf == "bias":
      return jnp.asarray(rng.normal(0, 0.1, x.shape), jnp.float32)
    return x
  return jax.tree_util.tree_map_with_path(perturb, variables)


def test_flat_layout_names_shapes_and_inverse():
  model = ResNet(depth=18, width_multiplier=0.125, stem="cifar")
  v = perturbed_variables(model, (1, 16, 16, 3))
  flat = export.flatten(v["params"], v["batch_stats"])
  assert flat["stem_conv/kernel"].shape == (3, 3, 3, 8)  # HWIO
  assert flat["stage2_block1/proj_conv/kernel"].shape == (1, 1, 8, 16)
  assert {"stem_bn/scale", "stem_bn/bias", "stem_bn/mean", "stem_bn/var"} <= set(flat)
  assert len(flat) == len(jax.tree.leaves(v))
  back = export.unflatten(flat)
  assert jax.tree.structure(back) == jax.tree.structure(dict(v))
  jax.tree.map(np.testing.assert_array_equal, back, dict(v))


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_files_load_back_the_same_arrays_and_metadata(tmp_path, ext):
  config = simclr_v2.get_config("cpu")
  v = perturbed_variables(ResNet(depth=18, width_multiplier=0.125, stem="cifar"), (1, 16, 16, 3))
  flat = export.flatten(v["params"], v["batch_stats"])
  meta = export.metadata(config, 123, "cvrl")
  export.save(str(tmp_path / f"enc{ext}"), flat, meta)
  arrays, meta_back = export.load(str(tmp_path / f"enc{ext}"))
  assert meta_back == meta and json.loads(meta_back["model"])["depth"] == 18
  assert sorted(arrays) == sorted(flat)
  for k in flat:
    np.testing.assert_array_equal(arrays[k], flat[k])


@pytest.mark.parametrize("depth,stem,size,width", [
    (18, "imagenet", 64, 1.0), (18, "cifar", 32, 1.0), (50, "imagenet", 64, 1.0),
    (18, "cifar", 32, 0.25), (50, "imagenet", 64, 0.25)])
def test_torchvision_gives_the_same_features(depth, stem, size, width):
  torch, _ = torch_and_torchvision()
  model = ResNet(depth=depth, stem=stem, width_multiplier=width)
  v = perturbed_variables(model, (1, size, size, 3), seed=depth)
  images = np.random.default_rng(1).uniform(0, 1, (2, size, size, 3)).astype(np.float32)
  expected = np.asarray(model.apply(v, images, train=False))

  state = export.torchvision_state_dict(export.flatten(v["params"], v["batch_stats"]), step=7)
  net = export.torchvision_resnet(depth, stem, width)
  net.load_state_dict({k: torch.from_numpy(np.array(a)) for k, a in state.items()}, strict=True)
  net.eval()
  with torch.no_grad():
    got = net(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("model,reason", [
    (dict(depth=50, width_multiplier=1, sk_ratio=0.0625), "selective-kernel"),
    (dict(name="vit", depth=12), "'vit' encoder"),
    (dict(depth=200, width_multiplier=1), "no ResNet-200"),
    (dict(name="lab_split", depth=18), "'lab_split' encoder"),
    (dict(depth=18, norm="layer"), "norm='layer'"),
    (dict(depth=18, patch_grid=(8, 4)), "patch_grid"),
])
def test_models_torchvision_cannot_hold_are_refused_with_the_way_out(model, reason):
  full = config_lib.model_section()
  full.update(model)
  with pytest.raises(ValueError, match=reason) as e:
    export.check_torchvision_compatible(full)
  assert ".npz or .safetensors" in str(e.value)


@pytest.mark.parametrize("get_config", [
    lambda: simclr_v2.get_config("cpu"), lambda: moco_v2.get_config("cpu"),
    lambda: moco_v3.get_config("cpu"), lambda: vicreg.get_config("cpu"),
    lambda: instdisc.get_config("cpu"), lambda: cmc.get_config("cpu")],
    ids=["simclr", "moco", "moco_v3", "vicreg", "instdisc", "cmc"])
def test_encoder_is_found_in_every_methods_params(get_config):
  c = get_config()
  c.model.width_multiplier = 0.125
  c.data_dir = SHARED_TFDS  # InstDisc's bank has a row per training image
  method = methods.get_method(c, num_classes=10, total_steps=10)
  images = jnp.zeros((8, 16, 16, 3))
  params, batch_stats, _ = method.init(jax.random.PRNGKey(0), images)
  enc_params, enc_stats = export.encoder_variables(params, batch_stats)
  alone = models.make_encoder(c.model, None).init(jax.random.PRNGKey(0), images, train=False)
  assert jax.tree.structure(enc_params) == jax.tree.structure(dict(alone["params"]))
  assert jax.tree.structure(enc_stats) == jax.tree.structure(dict(alone["batch_stats"]))


def test_export_from_a_workdir_to_every_format(tmp_path):
  workdir, method, state = fake_workdir(tmp_path)
  expected = export.flatten(*export.encoder_variables(state.params, state.batch_stats))
  export.export(workdir, str(tmp_path / "enc.safetensors"))
  arrays, meta = export.load(str(tmp_path / "enc.safetensors"))
  assert meta["step"] == "5" and meta["method"] == "simclr"
  for k in expected:
    np.testing.assert_array_equal(arrays[k], expected[k])

  export.export(workdir, str(tmp_path / "tv.npz"), layout="torchvision")
  arrays, meta = export.load(str(tmp_path / "tv.npz"))
  assert meta["layout"] == "torchvision" and arrays["conv1.weight"].shape == (64, 3, 3, 3)

  torch, _ = torch_and_torchvision()
  export.export(workdir, str(tmp_path / "enc.pt"))
  net = export.torchvision_resnet(18, "cifar")
  net.load_state_dict(torch.load(str(tmp_path / "enc.pt"), weights_only=True), strict=True)
  images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    got = net.eval()(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  want = np.asarray(method.features(jax.device_get(state.params),
                                    jax.device_get(state.batch_stats), images))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_bad_workdirs_and_formats_are_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    export.export(str(tmp_path), str(tmp_path / "enc.npz"))
  (tmp_path / "config.json").write_text(simclr_v2.get_config("cpu").to_json_best_effort())
  with pytest.raises(FileNotFoundError, match="has no checkpoints"):
    export.export(str(tmp_path), str(tmp_path / "enc.npz"))
  sk = simclr_v2.get_config("cpu")
  sk.model.update(depth=50, sk_ratio=0.0625)
  (tmp_path / "config.json").write_text(sk.to_json_best_effort())
  with pytest.raises(ValueError, match="selective-kernel"):  # before looking for checkpoints
    export.export(str(tmp_path), str(tmp_path / "enc.pt"))
  with pytest.raises(ValueError, match="extension picks the format"):
    export.export(str(tmp_path), str(tmp_path / "enc.h5"))
