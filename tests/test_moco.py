"""MoCo v1 / v2 and v3: the queue, the momentum update, ShuffleBN over BN groups,
training runs (1 vs 8 devices, stop and resume) on real CIFAR-10 with tiny models,
and the options: symmetric v1 / v2, v3 with DCL and without predictor."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import moco_v1, moco_v2, moco_v3
from cvrl_jax import methods, parallel, train
from cvrl_jax.methods import base, moco
from helpers import (assert_trees_close, loop_run, losses_by_step, preempted_run, preset_shapes,
                     read_metrics, restore, same_on_one_and_eight_devices, tiny_moco_config,
                     tiny_vit_config, train_steps)


# --------------------------------------------------------------------- pieces


def test_enqueue_is_fifo_and_wraps_around():
  queue, ptr = jnp.zeros((5, 1)), jnp.zeros((), jnp.int32)
  queue, ptr = base.enqueue(queue, ptr, jnp.array([[1.0], [2.0], [3.0]]))
  assert queue[:, 0].tolist() == [1, 2, 3, 0, 0] and int(ptr) == 3
  queue, ptr = base.enqueue(queue, ptr, jnp.array([[4.0], [5.0], [6.0]]))
  # 6 wraps to the front and replaces 1, the oldest key.
  assert queue[:, 0].tolist() == [6, 2, 3, 4, 5] and int(ptr) == 1
  queue, ptr = base.enqueue(queue, ptr, jnp.array([[7.0], [8.0], [9.0]]))
  assert queue[:, 0].tolist() == [6, 7, 8, 9, 5] and int(ptr) == 4
  with pytest.raises(ValueError, match="does not fit"):
    base.enqueue(queue, ptr, jnp.zeros((6, 1)))


def test_momentum_update_moves_the_key_network_only():
  params = {"encoder": {"w": jnp.full(3, 1.0)}, "head": {"w": jnp.full(2, 2.0)},
            "probe": {"w": jnp.ones(4)}}
  key = {"encoder": {"w": jnp.zeros(3)}, "head": {"w": jnp.zeros(2)}}
  new = base.momentum_update(key, params, 0.9)
  assert set(new) == {"encoder", "head"}
  np.testing.assert_allclose(new["encoder"]["w"], 0.1, rtol=1e-6)  # 1 - m in float32
  np.testing.assert_allclose(new["head"]["w"], 0.2, rtol=1e-6)
  np.testing.assert_allclose(base.momentum_update(key, params, 1.0)["head"]["w"], 0.0)


def test_v3_momentum_rises_from_m0_to_one_on_a_half_cosine():
  m = [float(base.cosine_momentum(s, 100, 0.99)) for s in (0, 25, 50, 100, 120)]
  assert m == pytest.approx([0.99, 1 - 0.01 * (np.cos(np.pi / 4) + 1) / 2, 0.995, 1.0, 1.0])


class OneHotBN(nn.Module):
  """BatchNorm of one-hot sample ids: output row i is nonzero exactly in the
  columns of the samples whose statistics normalised sample i."""
  batch: int

  @nn.compact
  def __call__(self, ids, train):
    return nn.BatchNorm(use_running_average=not train, momentum=0.0, use_bias=False,
                        use_scale=False)(jax.nn.one_hot(ids, self.batch))


def _bn_groups(batch, bn_groups, num_devices, rng):
  """(query group, key group) of every sample, as sets of sample ids, plus the
  keys' rows and the averaged BN statistics, with ``num_devices`` devices."""
  net = OneHotBN(batch)
  ids = jnp.arange(batch)
  variables = net.init(jax.random.PRNGKey(0), ids, train=False)
  mesh = parallel.make_mesh(num_devices)

  def per_device(ids, rng):
    groups = base.groups_per_device(bn_groups, parallel.DATA, "moco.bn_groups")
    queries, _ = base.apply_in_groups(net, variables, ids, groups)
    keys, stats = base.shuffle_bn(lambda x: base.apply_in_groups(net, variables, x, groups),
                                  ids, rng, parallel.DATA)
    return queries, keys, stats

  fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(parallel.DATA), P()),
                             out_specs=(P(parallel.DATA), P(), P())))
  queries, keys, stats = fn(jax.device_put(ids, NamedSharding(mesh, P(parallel.DATA))),
                            jax.device_put(rng, NamedSharding(mesh, P())))
  as_sets = lambda rows: [frozenset(np.flatnonzero(np.abs(r) > 1e-6)) for r in np.asarray(rows)]
  return as_sets(queries), as_sets(keys), np.asarray(keys), stats


@pytest.mark.parametrize("num_devices", [8, 1])
def test_shuffle_bn_normalises_query_and_key_with_different_samples(num_devices):
  """ShuffleBN on 8 devices, and its 1-device substitute (8 BN groups on one
  device): the samples whose statistics normalise key i are a random draw,
  sharing no more with query i's group than chance."""
  batch, groups, size = 64, 8, 8
  query_groups, key_groups, keys, stats = _bn_groups(batch, groups, num_devices,
                                                     jax.random.PRNGKey(3))
  # Queries: consecutive groups of the batch as it comes (per-device BN on 8 devices).
  assert query_groups == [frozenset(range(i // size * size, i // size * size + size))
                          for i in range(batch)]
  # Keys: groups of 8 again, returned in the batch's order (row i is sample i's key).
  assert all(len(g) == size and i in g for i, g in enumerate(key_groups))
  assert np.argmax(keys, axis=1).tolist() == list(range(batch))
  # The heart of it: no key is normalised with its query's group, and the other
  # samples of key i's group are in query i's group no more often than chance
  # (7 of the 63 others); without the shuffle this fraction would be 1.
  assert all(k != q for k, q in zip(key_groups, query_groups))
  shared = np.mean([len((k & q) - {i}) / (size - 1)
                    for i, (k, q) in enumerate(zip(key_groups, query_groups))])
  assert shared < 0.25, shared
  # Running statistics: the mean over the 8 groups of each group's mean.
  np.testing.assert_allclose(stats["BatchNorm_0"]["mean"], np.full(batch, 1 / batch), rtol=1e-6)


def test_eight_devices_and_one_device_form_the_same_bn_groups():
  eight = _bn_groups(32, 8, 8, jax.random.PRNGKey(5))
  one = _bn_groups(32, 8, 1, jax.random.PRNGKey(5))
  assert eight[:2] == one[:2]
  np.testing.assert_allclose(eight[2], one[2], rtol=1e-6, atol=1e-6)


def test_bn_groups_must_split_over_the_devices():
  with pytest.raises(ValueError, match="bn_groups=4 is not a multiple of the 8 devices"):
    _bn_groups(32, 4, 8, jax.random.PRNGKey(0))


# ------------------------------------------------------------------ training

_RUNS = {}


def run(tmp_path_factory, module, num_devices):
  """A tiny training run, cached for the session: tests share the 8-device runs.
  (workdir, [last checkpoint], [losses of every step])."""
  key = (module.__name__, num_devices)
  if key not in _RUNS:
    workdir = tmp_path_factory.mktemp(f"{module.__name__.split('.')[-1]}_{num_devices}")
    _RUNS[key] = workdir, *loop_run(tiny_moco_config(module, num_devices=num_devices), workdir)
  return _RUNS[key]


@pytest.mark.parametrize("module", [moco_v2, moco_v3], ids=["v2", "v3"])
def test_one_and_eight_devices_give_the_same_losses(tmp_path_factory, module):
  """8 devices with 8 BN groups compute what 1 device with 8 groups does (v2),
  and synchronised BN is global on any mesh (v3): same losses, same state (the
  key network and, v2, the queue: the global batch's keys, in its order)."""
  same_on_one_and_eight_devices(lambda n: run(tmp_path_factory, module, n)[1:], atol=1e-4)
  if module is moco_v3:
    eight = run(tmp_path_factory, module, 8)[0]
    m = [r["key_momentum"] for r in read_metrics(eight) if "key_momentum" in r]
    assert m == pytest.approx([float(base.cosine_momentum(s, 4, 0.99)) for s in range(4)])


def test_queue_after_training_holds_the_latest_keys(tmp_path_factory):
  workdir = run(tmp_path_factory, moco_v2, 8)[0]
  extra = restore(workdir, 4)["extra"]
  init_rng, _ = jax.random.split(jax.random.PRNGKey(0))  # as train.py seeds init
  _, _, at_start = moco.MoCo(tiny_moco_config(moco_v2), 10, 4).init(init_rng,
                                                              jnp.zeros((2, 16, 16, 3)))
  assert int(extra["queue_ptr"]) == 4 * 16 % 40
  np.testing.assert_allclose(np.linalg.norm(extra["queue"], axis=1), 1.0, rtol=1e-5)
  # 4 batches of 16 keys went into 40 rows: every row was overwritten.
  assert not np.isclose(extra["queue"], at_start["queue"]).all(axis=1).any()


def test_stopped_and_resumed_run_restores_queue_and_key_network(tmp_path_factory, tmp_path,
                                                                monkeypatch):
  """Stop after step 2 (a checkpoint), resume: the same losses and final state as
  the uninterrupted run, so the queue, its pointer and the key network were
  saved and restored, not re-initialised."""
  straight = run(tmp_path_factory, moco_v2, 8)[0]
  config = tiny_moco_config(moco_v2, num_devices=8)
  preempted_run(config, str(tmp_path), monkeypatch, steps=2)
  saved = restore(tmp_path, 2)["extra"]
  assert int(saved["queue_ptr"]) == 32 and set(saved) == {
      "key_params", "key_batch_stats", "queue", "queue_ptr"}
  train.train_and_evaluate(config, str(tmp_path))
  expected, resumed = losses_by_step(straight), losses_by_step(tmp_path)
  assert sorted(resumed) == [1, 2, 3, 4]
  for step in expected:
    assert resumed[step] == pytest.approx(expected[step], rel=1e-6), step
  assert_trees_close(restore(straight, 4)["extra"], restore(tmp_path, 4)["extra"],
                     rtol=1e-6, atol=1e-7)


def test_v3_with_a_vit_trains_and_keeps_the_patch_projection_frozen():
  """A tiny ViT through MoCo v3's step on 2 devices: AdamW with weight decay
  leaves the frozen patch projection exactly at its initialisation."""
  c = tiny_moco_config(moco_v3)
  c.model.update(name="vit", width=32, depth=1, num_heads=2, patch_size=4,
                 frozen_patch_embed=True)
  c.optimizer.update(name="adamw", base_lr=1e-3, weight_decay=0.1, warmup_epochs=0.0)
  (first, _, last), history = train_steps(c, 2, steps=2)
  assert np.isfinite(history[-1]["loss"])
  embed = lambda s: s.params["encoder"]["patch_embed"]
  assert_trees_close(embed(first), embed(last), rtol=0, atol=0)
  # The key network's copy is an EMA of that constant: m t + (1 - m) t, t up to rounding.
  assert_trees_close(first.extra["key_params"]["encoder"]["patch_embed"],
                     last.extra["key_params"]["encoder"]["patch_embed"], rtol=1e-6, atol=0)
  block = lambda s: s.params["encoder"]["block1"]["mlp_1"]["kernel"]
  assert np.abs(block(first) - block(last)).max() > 1e-5


def test_symmetric_moco_trains_alike_on_one_and_eight_devices_and_enqueues_both_views():
  """(q1, k2) and (q2, k1) against one queue, each key view ShuffleBN'd: the same
  steps on any mesh, and 2 x 16 keys a step into the queue of 40."""
  config = tiny_moco_config(moco_v2)
  config.moco.symmetric = True
  states, _ = same_on_one_and_eight_devices(lambda n: train_steps(config, n), atol=1e-4)
  assert [int(s.extra["queue_ptr"]) for s in states] == [s * 32 % 40 for s in range(5)]


def test_symmetric_queue_must_hold_both_views_keys():
  c = tiny_moco_config(moco_v2)
  c.moco.update(symmetric=True, queue_size=24)
  with pytest.raises(ValueError, match="queue_size=24 is smaller than the 32 keys of a step"):
    moco.MoCo(c, 10, 4)


def test_v3_with_dcl_and_without_predictor_trains_alike_on_one_and_eight_devices():
  """The decoupled ctr over the keys of the global batch, and the projection as
  the query: no predictor in the state, the same steps on any mesh."""
  config = tiny_vit_config(moco_v3)
  config.moco_v3.update(loss="dcl", predictor=False)
  states, _ = same_on_one_and_eight_devices(lambda n: train_steps(config, n))
  assert "predictor" not in states[-1].params and "head" in states[-1].params


def test_v3_unknown_loss_names_the_choices():
  c = moco_v3.get_config("cpu")
  c.moco_v3.loss = "infonce"
  with pytest.raises(ValueError, match=r"moco_v3.loss='infonce' is not one of \['ctr', 'dcl'\]"):
    methods.get_method(c, 10, 10)


@pytest.mark.parametrize("module", [moco_v1, moco_v2, moco_v3], ids=["v1", "v2", "v3"])
def test_every_preset_builds(module):
  """Shapes only (jax.eval_shape): every variant's networks, state and optimiser."""
  for c, params, extra in preset_shapes(module):
    assert jax.tree.structure(extra["key_params"]) == jax.tree.structure(
        {k: params[k] for k in ("encoder", "head")})
    if c.method == "moco":
      assert extra["queue"].shape == (c.moco.queue_size, c.head.output_dim)
    else:
      assert "predictor" in params and "predictor" not in extra["key_params"]
