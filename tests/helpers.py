"""What several test files share: a tiny real-data config, reading a run's results,
a preempted run, a trained-looking workdir. Test files import this, never each other."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp

from configs import simclr_v2
from conftest import SHARED_TFDS
from cvrl_jax import checkpoint, methods, parallel, step, train


def tiny_config(**overrides):
  """``simclr_v2.py:cpu`` shrunk to seconds: 16 px, width x0.125, 4 steps of 16 images."""
  c = simclr_v2.get_config("cpu")
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


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def losses_by_step(workdir):
  return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def restore_params(workdir, step):
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  return mngr.restore(step)["params"]


def preempted_run(config, workdir, monkeypatch, steps):
  """Runs ``config`` with a SIGTERM arriving during step ``steps`` (a preemption)."""
  make_step = step.make_train_step

  def preempted_after(*args):
    step_fn, calls = make_step(*args), []

    def wrapped(*a):
      calls.append(1)
      if len(calls) == steps:
        os.kill(os.getpid(), signal.SIGTERM)
      return step_fn(*a)
    return wrapped

  with monkeypatch.context() as m:
    m.setattr(step, "make_train_step", preempted_after)
    train.train_and_evaluate(config, workdir)


def fake_workdir(tmp_path, width: float = 1.0):
  """A workdir as training leaves it (config.json, an 8-device checkpoint), no training."""
  c = simclr_v2.get_config("cpu")
  c.model.width_multiplier = width
  c.head.update(hidden_dim=16, output_dim=8)
  workdir = str(tmp_path / "run")
  method = methods.get_method(c, num_classes=10, total_steps=10)
  mesh = parallel.make_mesh(None)
  state = step.create_train_state(method, optax.sgd(0.1), jax.random.PRNGKey(0),
                                  (1, 32, 32, 3), mesh)
  state = state.replace(step=jnp.asarray(5))
  with checkpoint.manager(workdir, c.max_to_keep) as mngr:
    mngr.save(5, args=ocp.args.StandardSave(state))
  with open(f"{workdir}/config.json", "w") as f:
    f.write(c.to_json_best_effort())
  return workdir, method, state
