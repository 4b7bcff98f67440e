"""Tests for cvrl_jax.models.resnet (small inputs / widths; big models via eval_shape)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

from cvrl_jax.models import ResNet, feature_dim
from cvrl_jax.models.resnet import BasicBlock, BottleneckBlock, resnet

# Concrete (non-abstract) runs are dominated by XLA compiling each op once per
# shape, so most of them share one small configuration: ResNet-18, width 1/4,
# CIFAR stem, 16 images of 16x16 (8 devices x 2 for the cross-replica test).
SMALL = 0.25
STD = dict(depth=18, width_multiplier=SMALL, stem="cifar")
HW, N = 16, 16


def _n_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_init(model, hw, batch=2):
  x = jax.ShapeDtypeStruct((batch, hw, hw, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def _abstract_apply(model, hw, batch=2, train=False):
  variables = _abstract_init(model, hw, batch)
  x = jax.ShapeDtypeStruct((batch, hw, hw, 3), jnp.float32)
  if train:
    fn = lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0]
  else:
    fn = lambda v, x: model.apply(v, x, train=False)
  return jax.eval_shape(fn, variables, x)


def _images(seed, n, hw):
  """Noise images whose global statistics differ per image (per-image gain and
  per-channel offset). With i.i.d. noise alone, globally pooled features are
  nearly equal across the batch, and a BN over them (SK attention branch)
  would divide by a near-zero batch std and magnify rounding noise."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, hw, hw, 3)) * rng.uniform(0.5, 2.0, (n, 1, 1, 1))
  return jnp.asarray(x + rng.normal(size=(n, 1, 1, 3)), jnp.float32)


_INIT_CACHE = {}
_APPLY_CACHE = {}


def _jitted_apply(model, train):
  """``jit`` of ``model.apply`` (one compile per model config and mode; jitted
  whole-graph compiles are cheaper on CPU than eager op-by-op dispatch)."""
  key = (repr(model), train)
  if key not in _APPLY_CACHE:
    if train:
      fn = lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
    else:
      fn = lambda v, x: model.apply(v, x, train=False)
    _APPLY_CACHE[key] = jax.jit(fn)
  return _APPLY_CACHE[key]


def _train(model, v, x):
  """Train-mode forward: (features, {"batch_stats": updated})."""
  return _jitted_apply(model, True)(v, x)


def _eval(model, v, x):
  return _jitted_apply(model, False)(v, x)


def _real_init(model, hw, batch=2):
  """``model.init`` (cached per model/shape).

  On CPU the cost of ``init`` is compiling the random samplers: run eagerly,
  one per distinct kernel shape. Under one ``jit`` and with the
  non-partitionable threefry that compiles several times faster, and the
  values are just as valid for these tests.
  """
  key = (repr(model), hw, batch)
  if key not in _INIT_CACHE:
    _INIT_CACHE[key] = _jit_init(model, jnp.zeros((batch, hw, hw, 3)))
  return _INIT_CACHE[key]


def _jit_init(module, x):
  with jax.threefry_partitionable(False):
    return jax.jit(lambda x: module.init(jax.random.key(0), x, train=False))(x)


def _random_variables(model, hw, seed=0):
  """Variables with the structure of ``model.init`` filled by numpy (cheap)."""
  return _random_variables_from(_abstract_init(model, hw), seed)


def _random_variables_from(abstract, seed=0):
  """Fill an abstract variable tree with numpy random values.

  Kernels get He fan-out std; BN gammas are non-zero so the residual branches
  (zero-initialised by ``init``) take part; running stats are non-trivial.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == "kernel":
      fan_out = int(np.prod(shape[:-2])) * shape[-1]
      a = rng.normal(0.0, np.sqrt(2.0 / fan_out), shape)
    elif name in ("scale", "var"):
      a = rng.uniform(0.5, 1.5, shape)
    else:  # bias, mean
      a = rng.normal(0.0, 0.1, shape)
    return jnp.asarray(a, jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, abstract)


# ----------------------------------------------------------------- shapes


@pytest.mark.parametrize("depth,stem,hw,n", [(18, "cifar", HW, N), (50, "imagenet", 64, 2)])
def test_output_shape_concrete(depth, stem, hw, n):
  model = ResNet(depth=depth, width_multiplier=SMALL, stem=stem)
  x = _images(0, n, hw)
  y = _eval(model, _random_variables(model, hw), x)
  assert y.shape == (n, feature_dim(depth, SMALL))
  assert y.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize(
  "depth,width,stem,hw",
  [
    (d, w, stem, hw)
    for d in (18, 34, 50)
    for w in (1, 2)
    for stem, hw in (("cifar", 32), ("imagenet", 64))
  ]
  + [(101, 1, "imagenet", 64), (152, 1, "imagenet", 64), (152, 2, "cifar", 32)],
)
def test_output_shape_abstract(depth, width, stem, hw):
  model = ResNet(depth=depth, width_multiplier=width, stem=stem)
  y = _abstract_apply(model, hw, batch=3, train=(depth == 34))
  assert y.shape == (3, feature_dim(depth, width))
  assert y.dtype == jnp.float32


def test_feature_dim_values():
  assert feature_dim(18, 1) == 512
  assert feature_dim(34, 2) == 1024
  assert feature_dim(50, 1) == 2048
  assert feature_dim(152, 3) == 6144
  assert feature_dim(18, 0.25) == 128
  assert feature_dim(50, 0.5) == 1024
  with pytest.raises(ValueError):
    feature_dim(42, 1)


def test_factory_and_bad_args():
  m = resnet(34, width_multiplier=2, stem="cifar")
  assert isinstance(m, ResNet) and m.depth == 34 and m.width_multiplier == 2
  with pytest.raises(ValueError):
    resnet(19)
  with pytest.raises(ValueError):
    _abstract_init(ResNet(depth=18, stem="nope"), 32)


# ------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
  "depth,expected",
  [
    (18, 11_689_512 - 513_000),  # torchvision resnet18 minus fc
    (34, 21_797_672 - 513_000),  # torchvision resnet34 minus fc
    (50, 25_557_032 - 2_049_000),  # torchvision resnet50 minus fc
    (101, 44_549_160 - 2_049_000),  # torchvision resnet101 minus fc
  ],
)
def test_param_count_matches_torchvision(depth, expected):
  variables = _abstract_init(ResNet(depth=depth, stem="imagenet"), 64)
  assert _n_params(variables["params"]) == expected
  assert set(variables) == {"params", "batch_stats"}
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))


def test_param_count_simclr_v2_sk():
  # SimCLR v2 reports R50 (1x, SK) at 35M and R152 (3x, SK) at 795M params.
  n = _n_params(_abstract_init(ResNet(depth=50, sk_ratio=0.0625), 64)["params"])
  assert round(n / 1e6) == 35
  n = _n_params(
    _abstract_init(ResNet(depth=152, width_multiplier=3, sk_ratio=0.0625), 64)["params"]
  )
  assert round(n / 1e6) == 795


# ------------------------------------------------------ selective kernels


@pytest.mark.parametrize("depth,stem,hw,n", [(18, "cifar", HW, N), (50, "imagenet", 64, 2)])
def test_selective_kernel(depth, stem, hw, n):
  kw = dict(depth=depth, width_multiplier=SMALL, stem=stem)
  sk, plain = ResNet(sk_ratio=0.0625, **kw), ResNet(**kw)
  v = _random_variables(sk, hw)
  x = _images(0, n, hw)
  y, upd = _train(sk, v, x)
  assert y.shape == (n, feature_dim(depth, SMALL))
  assert bool(jnp.all(jnp.isfinite(y)))
  assert jax.tree.structure(upd["batch_stats"]) == jax.tree.structure(v["batch_stats"])
  assert _n_params(v["params"]) > _n_params(_abstract_init(plain, hw)["params"])
  # SK conv in place of the 3x3 conv, ResNet-D shortcut on strided blocks.
  blk = v["params"]["stage2_block1"]
  sk_name = "conv2" if depth >= 50 else "conv1"
  assert set(blk[sk_name]) == {"conv", "bn", "fc", "fc_bn", "attn"}
  # the SK conv replaces "3x3 conv + BN + ReLU": no separate BN after it
  assert ("bn2" if depth >= 50 else "bn1") not in blk
  f = blk[sk_name]["conv"]["kernel"].shape[-1] // 2
  assert blk[sk_name]["conv"]["kernel"].shape[:2] == (3, 3)
  assert blk[sk_name]["fc"]["kernel"].shape[-1] == max(int(f * 0.0625), 32)
  assert blk[sk_name]["attn"]["kernel"].shape[-1] == 2 * f
  assert blk["proj_conv"]["kernel"].shape[:2] == (1, 1)
  if stem == "imagenet":  # SimCLR v2 SK models use the ResNet-D deep stem
    assert {"stem_conv1", "stem_conv2", "stem_conv3"} <= set(v["params"])


# ----------------------------------------------------- batch norm, init


def test_train_updates_batch_stats_and_eval_is_deterministic():
  model = ResNet(**STD)
  v = _real_init(model, HW)
  x = _images(0, N, HW)
  _, upd = _train(model, v, x)
  assert set(upd) == {"batch_stats"}
  assert jax.tree.structure(upd["batch_stats"]) == jax.tree.structure(v["batch_stats"])
  diffs = jax.tree.leaves(
    jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), upd["batch_stats"], v["batch_stats"])
  )
  assert all(float(d) > 0 for d in diffs)
  # initial running stats mean 0 / var 1; momentum 0.9 in flax's convention:
  # new = 0.9 * old + 0.1 * batch
  stem = v["batch_stats"]["stem_bn"]
  np.testing.assert_array_equal(np.asarray(stem["mean"]), 0.0)
  np.testing.assert_array_equal(np.asarray(stem["var"]), 1.0)
  conv = jax.lax.conv_general_dilated(
    x,
    v["params"]["stem_conv"]["kernel"],
    (1, 1),
    ((1, 1), (1, 1)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  np.testing.assert_allclose(
    np.asarray(upd["batch_stats"]["stem_bn"]["mean"]),
    0.1 * np.asarray(conv.mean(axis=(0, 1, 2))),
    rtol=1e-4,
    atol=1e-6,
  )
  # eval: no mutable collections needed, deterministic, uses running stats
  y1 = _eval(model, v, x)  # plain apply, no `mutable`
  y2 = _eval(model, v, x)
  np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
  y3 = _eval(model, {"params": v["params"], **upd}, x)
  assert not np.allclose(np.asarray(y1), np.asarray(y3))


def test_zero_init_last_bn_scale_and_no_conv_bias():
  # network level on ResNet-18; bottleneck and SK blocks in the test below
  params = _real_init(ResNet(**STD), HW)["params"]
  blocks = [k for k in params if k.startswith("stage")]
  assert len(blocks) == 8
  for name in blocks:
    blk = params[name]
    assert float(jnp.max(jnp.abs(blk["bn2"]["scale"]))) == 0.0, name
    assert float(jnp.min(blk["bn1"]["scale"])) == 1.0, name
    if "proj_bn" in blk:
      assert float(jnp.min(blk["proj_bn"]["scale"])) == 1.0, name
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [p.key for p in path]
    if keys[-1] == "bias":  # only BatchNorms have a bias
      assert "bn" in keys[-2], keys


def test_conv_init_is_he_fan_out():
  params = _real_init(ResNet(**STD), HW)["params"]
  k = np.asarray(params["stage4_block2"]["conv1"]["kernel"])  # 3x3x128x128
  expected_std = np.sqrt(2.0 / (3 * 3 * k.shape[-1]))
  assert abs(k.std() / expected_std - 1.0) < 0.03
  assert abs(k.mean()) < 0.05 * expected_std


def test_blocks_start_as_identity_on_residual_path():
  # With zero-init last gammas the residual branch outputs exactly 0, so a block
  # with an identity shortcut maps a non-negative input to itself.
  x = jnp.tile(jax.nn.relu(_images(0, 2, 4)), (1, 1, 1, 8))  # 24 channels
  for blk, last in (
    (BottleneckBlock(filters=6), "bn3"),
    (BottleneckBlock(filters=6, sk_ratio=0.0625), "bn3"),
    (BasicBlock(filters=24, sk_ratio=0.0625), "bn2"),
  ):
    v = _jit_init(blk, x)
    assert float(jnp.max(jnp.abs(v["params"][last]["scale"]))) == 0.0
    y = jax.jit(lambda v, x: blk.apply(v, x, train=False))(v, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-6)


# ---------------------------------------------------- cross-replica BN


@pytest.mark.parametrize("sk", [0.0, 0.0625])
def test_cross_replica_bn_matches_global_batch(sk):
  n_dev = 8
  assert jax.device_count() >= n_dev and N % n_dev == 0
  mesh = jax.make_mesh((n_dev,), ("data",))
  local = ResNet(sk_ratio=sk, **STD)
  dist = ResNet(sk_ratio=sk, axis_name="data", **STD)
  v = _random_variables(local, HW)
  # params/stats have the same structure whether or not axis_name is set
  assert jax.tree.structure(_abstract_init(dist, HW)) == jax.tree.structure(v)
  x = _images(0, N, HW)

  y_ref, upd_ref = _train(local, v, x)

  def step(v, x):
    return dist.apply(v, x, train=True, mutable=["batch_stats"])

  sharded = jax.jit(
    jax.shard_map(
      step, mesh=mesh, in_specs=(P(), P("data")), out_specs=(P("data"), P()), check_vma=False
    )
  )
  x_sh = jax.device_put(x, NamedSharding(mesh, P("data")))
  y, upd = sharded(jax.device_put(v, NamedSharding(mesh, P())), x_sh)
  assert y.shape == y_ref.shape == (N, feature_dim(18, SMALL))
  # Equal up to float32 reassociation of the all-reduced sums (observed ~1e-5);
  # per-device statistics (2 images) would give O(1) differences.
  tol = 1e-4
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=tol, atol=tol)
  # the updated running statistics agree too (identical on every replica)
  for a, b in zip(jax.tree.leaves(upd), jax.tree.leaves(upd_ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)
  # ... and the check has teeth: the first devices' outputs depend on the
  # images held by the other devices (statistics really are global).
  x2 = x.at[N // 2 :].multiply(3.0).at[N // 2 :].add(1.0)
  y2, _ = sharded(
    jax.device_put(v, NamedSharding(mesh, P())), jax.device_put(x2, NamedSharding(mesh, P("data")))
  )
  assert not np.allclose(np.asarray(y2)[: N // 2], np.asarray(y)[: N // 2], atol=1e-2)

  # eval mode with axis_name set needs no mapped axis
  np.testing.assert_allclose(
    np.asarray(_eval(dist, v, x)), np.asarray(_eval(local, v, x)), rtol=1e-6
  )


# ------------------------------------------------------------ remat, dtype


def test_remat_same_outputs():
  plain, remat = ResNet(**STD), ResNet(remat=True, **STD)
  v = _random_variables(plain, HW)
  assert jax.tree.structure(_abstract_init(remat, HW)) == jax.tree.structure(v)
  x = _images(0, N, HW)
  out_plain, out_remat = _train(plain, v, x), _train(remat, v, x)
  for a, b in zip(jax.tree.leaves(out_plain), jax.tree.leaves(out_remat)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_remat_block_same_grads():
  # Gradients through the rematerialised block (same wrapping as ResNet uses).
  x = _images(1, 2, 4)
  plain = BottleneckBlock(filters=4, strides=2, sk_ratio=0.0625)
  remat = nn.remat(BottleneckBlock, static_argnums=(2,))(filters=4, strides=2, sk_ratio=0.0625)
  v = _random_variables_from(jax.eval_shape(lambda: plain.init(jax.random.key(0), x, train=False)))

  def grads(block):
    def f(params, x):
      # `train` positionally: nn.remat's static_argnums refer to positions
      y, _ = block.apply(
        {"params": params, "batch_stats": v["batch_stats"]}, x, True, mutable=["batch_stats"]
      )
      return jnp.sum(y**2)

    return jax.jit(jax.grad(f, argnums=(0, 1)))(v["params"], x)

  for a, b in zip(jax.tree.leaves(grads(plain)), jax.tree.leaves(grads(remat))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_bfloat16_compute_float32_params_and_output():
  f32, bf16 = ResNet(**STD), ResNet(dtype=jnp.bfloat16, **STD)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(_abstract_init(bf16, HW)))
  v, x = _random_variables(f32, HW), _images(0, N, HW)
  y, upd = _train(bf16, v, x)
  assert y.dtype == jnp.float32
  assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(upd))
  y32 = _train(f32, v, x)[0]
  np.testing.assert_allclose(np.asarray(y), np.asarray(y32), rtol=0.1, atol=0.1)


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_conv_matches_xla_conv_values_and_grads(stride):
  """The CPU branch of a 1x1 conv (a matrix product) is the same maths as the conv."""
  from cvrl_jax.models.resnet import pointwise_conv
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (3, 9, 9, 8))
  w = jax.random.normal(kw, (1, 1, 8, 5))
  ho = (9 - 1) // stride + 1
  g = jax.random.normal(kg, (3, ho, ho, 5))
  dn = ("NHWC", "HWIO", "NHWC")
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (stride, stride), ((0, 0), (0, 0)),
                                                   dimension_numbers=dn)
  ours = lambda x, w: pointwise_conv(x, w, (stride, stride), ((0, 0), (0, 0)),
                                     dimension_numbers=dn)
  y_ref, vjp_ref = jax.vjp(conv, x, w)
  y, vjp = jax.vjp(ours, x, w)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(vjp(g), vjp_ref(g)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_cpu_resnet_runs_1x1_convs_as_matrix_products():
  """On a CPU only the 3x3 convs stay convolutions; the 1x1 shortcuts become dots."""
  model = ResNet(**STD)
  x = jnp.zeros((2, HW, HW, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  hlo = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
      variables, x).compile().as_text()
  # ResNet-18: the stem conv and 16 block convs are 3x3; 3 projection shortcuts are 1x1.
  assert hlo.count("convolution(") == 17, hlo.count("convolution(")
  assert hlo.count(" dot(") >= 3
