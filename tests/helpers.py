"""What several test files share (test files import this, never each other): a tiny
real-data config, reading a run's metrics and checkpoints, a preempted run, a
trained-looking workdir; for the methods, every preset's shapes, random train
steps, a function per device, tree comparisons, and the one check that 1 and 8
devices train alike (``same_on_one_and_eight_devices``)."""

import json
import os
import signal
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import simclr_v2
from conftest import SHARED_TFDS
from cvrl_jax import checkpoint, methods, optim, parallel, step as step_lib, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, **env):
  """``python -m cvrl_jax.main ARGS`` from the repository root, as a user types it,
  with ``env`` (e.g. ``TFDS_DATA_DIR``) added to the environment."""
  import subprocess
  import sys
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
  return subprocess.run([sys.executable, "-m", "cvrl_jax.main", *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


def tiny_config(variant: str = "cpu", **overrides):
  """``simclr_v2.py:cpu`` (or ``variant``) shrunk to seconds: 16 px, width x0.125, 4
  steps of 16 images."""
  c = simclr_v2.get_config(variant)
  c.data_dir = SHARED_TFDS
  c.image_size = 16
  c.model.width_multiplier = 0.125
  c.head.update(hidden_dim=32, output_dim=16)
  c.batch_size = 16
  c.num_train_examples = 512
  c.total_steps = 4
  c.optimizer.warmup_epochs = 1.0
  c.log_every_steps = 1
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  c.knn.update(num_train_examples=256, num_eval_examples=64, batch_size=64,
               eval_at_start=False)
  for k, v in overrides.items():
    c[k] = v
  return c


def tiny_moco_config(module, variant: str = "cpu", **overrides):
  """A MoCo v1 / v2 / v3 cpu preset (or ``variant``) shrunk like ``tiny_config`` (a
  queue that wraps mid-batch; v3 at a fixed rate and momentum)."""
  c = module.get_config(variant)
  c.update(data_dir=SHARED_TFDS, image_size=16, batch_size=16, num_train_examples=512,
           total_steps=4, log_every_steps=1, eval_every_steps=1000,
           checkpoint_every_steps=1000)
  c.model.width_multiplier = 0.125
  c.head.update(hidden_dim=32, output_dim=16)
  if c.method == "moco":
    c.moco.queue_size = 40  # not a multiple of the batch: wraps around mid-batch
  else:
    c.predictor.hidden_dim = 32
    # The test's own rate and momentum, fixed so that tuning the cpu preset
    # (LARS 4.0, momentum from 0.9) does not change what is checked here.
    c.optimizer.base_lr = 1.0
    c.moco_v3.momentum = 0.99
  c.knn.update(num_train_examples=256, num_eval_examples=64, batch_size=64,
               eval_at_start=False)
  for k, v in overrides.items():
    c[k] = v
  return c


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def losses_by_step(workdir):
  return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def preempted_run(config, workdir, monkeypatch, steps):
  """Runs ``config`` with a SIGTERM arriving during step ``steps`` (a preemption)."""
  make_step = step_lib.make_train_step

  def preempted_after(*args):
    step_fn, calls = make_step(*args), []

    def wrapped(*a):
      calls.append(1)
      if len(calls) == steps:
        os.kill(os.getpid(), signal.SIGTERM)
      return step_fn(*a)
    return wrapped

  with monkeypatch.context() as m:
    m.setattr(step_lib, "make_train_step", preempted_after)
    train.train_and_evaluate(config, workdir)


def fake_workdir(tmp_path, width: float = 1.0):
  """A workdir as training leaves it (config.json, an 8-device checkpoint), no training."""
  c = simclr_v2.get_config("cpu")
  c.model.width_multiplier = width
  c.head.update(hidden_dim=16, output_dim=8)
  workdir = str(tmp_path / "run")
  method = methods.get_method(c, num_classes=10, total_steps=10)
  mesh = parallel.make_mesh(None)
  state = step_lib.create_train_state(method, optax.sgd(0.1), jax.random.PRNGKey(0),
                                      (1, 32, 32, 3), mesh)
  state = state.replace(step=jnp.asarray(5))
  with checkpoint.manager(workdir, c.max_to_keep) as mngr:
    mngr.save(5, args=ocp.args.StandardSave(state))
  with open(f"{workdir}/config.json", "w") as f:
    f.write(c.to_json_best_effort())
  return workdir, method, state
def preset_shapes(module):
  """(config, params, extra) of every variant of the config ``module``, shapes only
  (``jax.eval_shape``), with the optimiser built too."""
  for variant in module.VARIANTS:
    c = module.get_config(variant)
    method = methods.get_method(c, 1000, 1000)
    tx, _ = optim.create_optimizer(c, c.batch_size, 1000, 100)
    images = jax.ShapeDtypeStruct((2, c.image_size, c.image_size, 3), jnp.float32)
    params, _, extra = jax.eval_shape(method.init, jax.random.PRNGKey(0), images)
    jax.eval_shape(tx.init, params)
    yield c, params, extra


def tiny_vit_config(module, base_lr: float = 1.0):
  """``module``'s cpu preset on a one-block ViT (fast to compile; the heads' BN
  still runs across devices), 16 px, batch 16, 3 steps, plain SGD without weight
  decay: the parameters then show any error in the gradients' scale, which LARS's
  trust ratio would hide."""
  c = module.get_config("cpu")
  c.model.update(name="vit", width=32, depth=1, num_heads=2, patch_size=4)
  c.update(image_size=16, batch_size=16, total_steps=3)
  c.head.update(hidden_dim=32, output_dim=16)
  c.predictor.hidden_dim = 32
  c.optimizer.update(name="sgd", base_lr=base_lr, weight_decay=0.0, warmup_epochs=0.0)
  return c


def plain_sgd(c, base_lr: float = 0.5):
  """``c`` with SGD at a visible rate: LARS's small trust-ratio steps would hide the
  difference between a frozen and a learning layer."""
  c.optimizer.update(name="sgd", base_lr=base_lr, lr_scaling="none", weight_decay=1e-4,
                     warmup_epochs=0.0)
  return c


def train_steps(config, num_devices: int, steps: int = 0):
  """``steps`` (default ``config.total_steps``) train steps on random batches:
  the views, ``config.multicrop``'s small crops, labels of 4 classes (so they
  repeat), a new batch each step. Returns [the first state, the state after each
  step] as numpy, and each step's metrics."""
  c, steps = config, steps or config.total_steps
  mesh = parallel.make_mesh(num_devices)
  method = methods.get_method(c, 10, c.total_steps)
  tx, _ = optim.create_optimizer(c, c.batch_size, c.total_steps, c.total_steps)
  state = step_lib.create_train_state(method, tx, jax.random.PRNGKey(0),
                                   (c.batch_size // num_devices, c.image_size, c.image_size, 3),
                                   mesh)
  step = step_lib.make_train_step(method, tx, mesh)
  rng = np.random.default_rng(0)
  image = lambda size: rng.uniform(size=(c.batch_size, size, size, 3)).astype(np.float32)
  states, history = [jax.tree.map(np.asarray, state)], []
  for _ in range(steps):
    batch = {"views": tuple(image(c.image_size) for _ in range(c.num_views)),
             "small_views": tuple(image(c.multicrop.size) for _ in range(c.multicrop.num_small)),
             "label": rng.integers(0, 4, c.batch_size).astype(np.int32)}
    state, metrics = step(state, parallel.host_to_global(batch, mesh),
                          jax.device_put(jax.random.PRNGKey(1), parallel.replicated(mesh)))
    states.append(jax.tree.map(np.asarray, state))
    history.append({k: float(v.compute()) for k, v in metrics.items()})
  return states, history


def restore(workdir, step: int):
  """The checkpoint of ``step`` in a training run's ``workdir``, as a dict."""
  return ocp.CheckpointManager(os.path.join(workdir, "checkpoints")).restore(step)


def loop_run(config, workdir) -> tuple[list[Any], list[dict]]:
  """``config`` through the training loop in ``workdir``: ([its last checkpoint,
  with attributes ``params``, ``extra``, ...], [{"loss": ...} of every step])."""
  train.train_and_evaluate(config, str(workdir))
  losses = losses_by_step(workdir)
  assert sorted(losses) == list(range(1, config.total_steps + 1))
  state = types.SimpleNamespace(**restore(workdir, config.total_steps))
  return [state], [{"loss": losses[s]} for s in sorted(losses)]


def on_mesh(fn, num_devices, *args):
  """``fn(*args, axis_name)`` per device under shard_map; args split on axis 0."""
  mesh = parallel.make_mesh(num_devices)
  spec = P(parallel.DATA)
  mapped = jax.shard_map(lambda *a: fn(*a, parallel.DATA), mesh=mesh,
                         in_specs=(spec,) * len(args), out_specs=spec)
  return jax.jit(mapped)(*(jax.device_put(a, NamedSharding(mesh, spec)) for a in args))


def assert_trees_close(a, b, **tol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, **tol)


def same_on_one_and_eight_devices(run: Callable[[int], tuple[list[Any], list[dict]]],
                                  atol: float = 5e-4, metrics_rel: float = 1e-3):
  """``run(num_devices)`` -> ([states], [metrics of every step]) (``train_steps``,
  ``loop_run``) on 1 and on 8 devices: asserts the same metrics at every step and
  the same parameters, BatchNorm statistics and extra state in every state.
  Returns the 8-device result.

  Tolerances: the meshes reduce in different orders, and SGD on a tiny model
  amplifies the rounding a little every step; a wrong global quantity or
  gradient scale differs by far more. A state leaf's rounding scales with its
  largest entry (a ViT class token reaches ~14); a queue in the wrong order or a
  local statistic differs by O(1). A loss near 0 (SimSiam's negative cosine plus
  its offset) gets an absolute tolerance too: 1.3e-5 apart on an AMD EPYC.
  """
  assert jax.device_count() == 8
  (s1, h1), (s8, h8) = run(1), run(8)
  assert len(h1) == len(h8) > 0 and len(s1) == len(s8)
  for step, (m1, m8) in enumerate(zip(h1, h8)):
    assert np.isfinite(m1["loss"]), step
    assert m8["loss"] == pytest.approx(m1["loss"], rel=2e-4, abs=5e-5), step
    assert m8 == pytest.approx(m1, rel=metrics_rel, abs=1e-5), step
  for one, eight in zip(s1, s8):
    for name in ("params", "batch_stats", "extra"):
      for a, b in zip(jax.tree.leaves(getattr(one, name)), jax.tree.leaves(getattr(eight, name)),
                      strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=atol * max(1.0, np.abs(b).max()),
                                   err_msg=name)
  return s8, h8
