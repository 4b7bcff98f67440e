"""CMC: the RGB-to-Lab conversion against published values, the two-view loss by
hand, the split encoder's features, training runs on real CIFAR-10 with tiny
models (1 vs 8 devices, stop and resume with both queues), every preset, export."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cmc as cmc_config
from conftest import SHARED_TFDS
from cvrl_jax import methods, models, train
from cvrl_jax.methods import cmc
from cvrl_jax.models import lab_split
from cvrl_jax.tools import export
from helpers import (assert_trees_close, loop_run, losses_by_step, preempted_run, preset_shapes,
                     read_metrics, restore, same_on_one_and_eight_devices, train_steps)

# ------------------------------------------------------------ RGB -> L*a*b*

# The corners of the sRGB cube in CIE L*a*b* (D65), as published for sRGB (what
# skimage.color.rgb2lab gives): the extremes of a and b are the authors'
# normalisation constants (green, magenta; blue, yellow).
CORNERS = {
    (0, 0, 0): (0.0, 0.0, 0.0), (1, 1, 1): (100.0, 0.0, 0.0),
    (1, 0, 0): (53.241, 80.092, 67.203), (0, 1, 0): (87.735, -86.183, 83.179),
    (0, 0, 1): (32.297, 79.188, -107.860), (1, 1, 0): (97.139, -21.554, 94.478),
    (0, 1, 1): (91.113, -48.088, -14.131), (1, 0, 1): (60.324, 98.234, -60.825)}


def test_lab_of_the_srgb_cube_corners_matches_the_published_values():
  rgb = jnp.asarray(list(CORNERS), jnp.float32)
  np.testing.assert_allclose(lab_split.rgb_to_lab(rgb), list(CORNERS.values()), atol=0.02)


def test_lab_by_hand_on_grays_both_branches_of_the_cie_function():
  # Gray g: a = b = 0 (up to the 6-digit matrix's rounding) and L depends on Y = linear(g) only. g = 0.5: Y = ((0.555 /
  # 1.055) ^ 2.4) = 0.21404, L = 116 Y^(1/3) - 16 = 53.389. g = 0.01: Y = 0.01 / 12.92
  # is below (6/29)^3, on the linear piece: L = 116 (Y / (3 (6/29)^2) + 4/29) - 16.
  y = 0.01 / 12.92
  low = 116 * (y / (3 * (6 / 29) ** 2) + 4 / 29) - 16
  lab = lab_split.rgb_to_lab(jnp.array([[0.5] * 3, [0.01] * 3]))
  np.testing.assert_allclose(lab[:, 0], [53.389, low], rtol=2e-4)
  np.testing.assert_allclose(lab[:, 1:], 0.0, atol=5e-3)


def test_normalised_lab_maps_the_gamut_to_minus_one_one():
  norm = np.asarray(lab_split.normalise_lab(lab_split.rgb_to_lab(
      jnp.asarray(list(CORNERS), jnp.float32))))
  # L: black -1, white 1; a: green -1, magenta 1; b: blue -1, yellow 1.
  np.testing.assert_allclose(norm[[0, 1], 0], [-1, 1], atol=1e-4)
  np.testing.assert_allclose(norm[[3, 7], 1], [-1, 1], atol=1e-4)
  np.testing.assert_allclose(norm[[4, 5], 2], [-1, 1], atol=1e-4)
  colours = jax.random.uniform(jax.random.PRNGKey(0), (10_000, 3))
  assert np.abs(lab_split.normalise_lab(lab_split.rgb_to_lab(colours))).max() <= 1.0001


def test_features_are_the_l_and_the_ab_encoders_concatenated():
  """Two ResNet-18 x0.125 (total width 0.25): 2 x 64 features, the first half the
  L encoder's on the L channel alone, the second the ab encoder's on a and b."""
  c = cmc_config.get_config("cpu").model
  encoder = models.make_encoder(c, None)
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))
  variables = encoder.init(jax.random.PRNGKey(0), images, train=False)
  features = encoder.apply(variables, images, train=False)
  assert features.shape == (2, 2 * models.feature_dim(18, 0.125))
  lab = lab_split.normalise_lab(lab_split.rgb_to_lab(images))
  one = models.resnet(18, width_multiplier=0.125, stem="cifar")
  for half, name, channels in ((0, "l", lab[..., :1]), (1, "ab", lab[..., 1:])):
    alone = one.apply({k: v[name] for k, v in variables.items()}, channels, train=False)
    np.testing.assert_allclose(np.split(np.asarray(features), 2, -1)[half], alone, rtol=1e-5)
  assert variables["params"]["l"]["stem_conv"]["kernel"].shape[2] == 1
  assert variables["params"]["ab"]["stem_conv"]["kernel"].shape[2] == 2


# ------------------------------------------------------------------ the loss

E1, E2 = [1.0, 0.0], [0.0, 1.0]


def test_two_view_loss_by_hand_each_view_against_the_others_queue():
  # tau = 0.5. L's query e1, its ab key e1, ab's queue [e2, -e1]: logits [2, 0, -2].
  # ab's query e2, its L key e1, L's queue [e2, e2]: logits [0, 2, 2].
  t = jnp.array
  loss_l, loss_ab = cmc.two_view_loss(
      q_l=t([E1]), q_ab=t([E2]), k_l=t([E1]), k_ab=t([E1]), queue_l=t([E2, E2]),
      queue_ab=t([E2, [-1.0, 0.0]]), temperature=0.5)
  assert float(loss_l) == pytest.approx(-2 + np.log(np.exp(2) + 1 + np.exp(-2)), rel=1e-6)
  assert float(loss_ab) == pytest.approx(np.log(1 + 2 * np.exp(2)), rel=1e-6)


# ------------------------------------------------------------------ training


def tiny(**overrides):
  """The cpu preset at 16 px, two ResNet-18 x0.0625, 4 steps of 64 images, a queue of
  96 (it wraps around mid-batch). 64: the preset's BN head normalises each BN group
  of the batch (8 groups), and over groups of 2 images BN is nearly a sign function,
  whose rounding the two meshes' different sums blow up to 1e-2 in the loss by step
  4; over groups of 4 the losses agree to 5e-5 but a BN bias 4.5e-4 apart."""
  c = cmc_config.get_config("cpu")
  c.update({"data_dir": SHARED_TFDS, "image_size": 16, "batch_size": 64, "total_steps": 4,
            "num_train_examples": 512, "log_every_steps": 1, "eval_every_steps": 1000,
            "checkpoint_every_steps": 1000, **overrides})
  c.model.width_multiplier = 0.125
  c.head.output_dim = 16
  c.cmc.queue_size = 96
  c.knn.update(num_train_examples=256, num_eval_examples=64, batch_size=64,
               eval_at_start=False)
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """``run(num_devices)``: the tiny run, once a module: (workdir, [last checkpoint],
  [losses of every step])."""

  @functools.cache
  def on(num_devices):
    workdir = tmp_path_factory.mktemp(f"cmc_{num_devices}")
    return workdir, *loop_run(tiny(num_devices=num_devices), workdir)
  return on


def test_one_and_eight_devices_give_the_same_losses(run):
  """8 BN groups on 8 devices or on 1, ShuffleBN of the global batch, both queues
  fed the global batch's keys: the same losses, parameters, key network and queues."""
  same_on_one_and_eight_devices(lambda n: run(n)[1:], atol=1e-4)


def test_queues_hold_the_latest_keys_and_the_monitor_reads_both_encoders(run):
  workdir = run(8)[0]
  extra = restore(workdir, 4)["extra"]
  assert int(extra["queue_ptr"]) == 4 * 64 % 96
  for name in ("queue_l", "queue_ab"):
    np.testing.assert_allclose(np.linalg.norm(extra[name], axis=1), 1.0, rtol=1e-5)
  # Two views' keys of the same images, through different encoders: different rows.
  assert not np.allclose(extra["queue_l"], extra["queue_ab"], atol=1e-2)
  rows = [r for r in read_metrics(workdir) if "loss_l" in r]
  assert len(rows) == 4 and all(r["loss"] == pytest.approx(r["loss_l"] + r["loss_ab"], rel=1e-5)
                                for r in rows)
  knn = {r["step"]: r["knn_top1"] for r in read_metrics(workdir) if "knn_top1" in r}
  assert 4 in knn and all(0.0 <= v <= 100.0 for v in knn.values())
  state = restore(workdir, 4)
  features = methods.get_method(tiny(), 10, 4).features(state["params"], state["batch_stats"],
                                                        jnp.zeros((3, 16, 16, 3)))
  assert features.shape == (3, 2 * models.feature_dim(18, 0.0625))


def test_stopped_and_resumed_run_restores_both_queues_and_the_key_network(
    run, tmp_path, monkeypatch):
  """Stop after step 2 (a checkpoint), resume: the same losses and final state as
  the uninterrupted run, so the queues, their pointer and the key network were
  saved and restored, not re-initialised."""
  straight = run(8)[0]
  config = tiny(num_devices=8)
  preempted_run(config, str(tmp_path), monkeypatch, steps=2)
  saved = restore(tmp_path, 2)["extra"]
  assert int(saved["queue_ptr"]) == 2 * 64 % 96 and set(saved) == {
      "key_params", "key_batch_stats", "queue_l", "queue_ab", "queue_ptr"}
  train.train_and_evaluate(config, str(tmp_path))
  resumed = losses_by_step(tmp_path)
  assert sorted(resumed) == [1, 2, 3, 4]
  assert resumed == pytest.approx(losses_by_step(straight), rel=1e-6)
  assert_trees_close(restore(straight, 4)["extra"], restore(tmp_path, 4)["extra"], rtol=1e-6,
                     atol=1e-7)


def test_the_papers_single_crop_trains():
  """num_views=1: the keys are the momentum network's L and ab of the query's own
  crop (the same code as two crops but for the key view: the 1-vs-8 check above
  covers the mesh)."""
  states, history = train_steps(tiny(num_views=1, total_steps=2), 1)
  assert [int(s.extra["queue_ptr"]) for s in states] == [0, 64, 32]
  assert all(np.isfinite(h["loss"]) for h in history)
  moved = lambda name: np.abs(states[-1].params["head"][name]["dense_0"]["kernel"]
                              - states[0].params["head"][name]["dense_0"]["kernel"]).max()
  assert moved("l") > 1e-6 and moved("ab") > 1e-6


# ---------------------------------------------------------- export, presets


def test_export_holds_both_encoders_and_refuses_torchvision(run, tmp_path):
  """The cvrl layout rebuilds the whole encoder (names under l/ and ab/, the same
  features); a .pt is refused, naming why and the way out."""
  workdir = run(8)[0]
  out = str(tmp_path / "cmc.npz")
  export.export(str(workdir), out)
  arrays, meta = export.load(out)
  assert {name.split("/")[0] for name in arrays} == {"l", "ab"} and meta["method"] == "cmc"
  images = jax.random.uniform(jax.random.PRNGKey(2), (3, 16, 16, 3))
  again = models.make_encoder(tiny().model, None).apply(export.unflatten(arrays), images,
                                                         train=False)
  state = restore(workdir, 4)
  features = methods.get_method(tiny(), 10, 4).features(state["params"], state["batch_stats"],
                                                        images)
  np.testing.assert_allclose(again, features, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="'lab_split' encoder .* half width_multiplier") as e:
    export.export(str(workdir), str(tmp_path / "cmc.pt"))
  assert ".npz or .safetensors" in str(e.value)


def test_every_preset_builds_with_a_queue_per_view():
  """Shapes only (jax.eval_shape): every variant's networks, state and optimiser."""
  dims = {"imagenet": 2 * 1024, "cifar10": 2 * 256, "cpu": 2 * 64}  # [L's, ab's]
  for variant, (c, params, extra) in zip(cmc_config.VARIANTS, preset_shapes(cmc_config)):
    assert c.model.name == "lab_split" and set(params["head"]) == {"l", "ab"}
    assert jax.tree.structure(extra["key_params"]) == jax.tree.structure(
        {k: params[k] for k in ("encoder", "head")})
    for name in ("queue_l", "queue_ab"):
      assert extra[name].shape == (c.cmc.queue_size, 128)
    method = methods.get_method(c, 10, 10)
    images = jax.ShapeDtypeStruct((2, c.image_size, c.image_size, 3), jnp.float32)
    features = jax.eval_shape(method.features, params, extra["key_batch_stats"], images)
    assert features.shape == (2, dims[variant])


def test_bad_settings_are_refused_with_the_fix():
  c = tiny()
  c.model.name = "resnet"
  with pytest.raises(ValueError, match="model.name=lab_split"):
    methods.get_method(c, 10, 4)
  with pytest.raises(ValueError, match="num_views=3"):
    methods.get_method(tiny(num_views=3), 10, 4)
  c = tiny()
  c.cmc.queue_size = 8
  with pytest.raises(ValueError, match="queue_size=8 is smaller than the 64 keys"):
    methods.get_method(c, 10, 4)
