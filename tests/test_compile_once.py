"""The loop compiles its step and its eval function once, across epochs and evals,
and never waits for the device between logs."""

import logging

import jax
from helpers import tiny_config

from cvrl_jax import loop, step as step_lib, train


def test_train_step_and_features_compile_once_over_several_epochs(tmp_path, caplog):
  # 32 images / batch 16 = 2 steps per epoch: 6 steps are 3 epochs; 3 kNN evals.
  config = tiny_config(num_devices=8, num_train_examples=32, total_steps=6,
                       eval_every_steps=2)
  with jax.log_compiles(True), caplog.at_level(logging.WARNING):
    train.train_and_evaluate(config, str(tmp_path))
  compiles = [r.getMessage().split(" with ")[0] for r in caplog.records
              if r.getMessage().startswith("Compiling jit(")]
  assert compiles.count("Compiling jit(train_step)") == 1, compiles
  assert compiles.count("Compiling jit(features)") == 1, compiles


def _readiness_at_dispatch(tmp_path, monkeypatch, read_loss_every_step: bool) -> list[bool]:
  """Whether each step's input state was already computed when the loop dispatched it."""
  make, merge, ready = step_lib.make_train_step, loop.merge_metrics, []

  def make_watched(*args, **kwargs):
    step = make(*args, **kwargs)

    def watched(state, batch, rng):
      ready.append(state.step.is_ready())
      return step(state, batch, rng)
    return watched

  def merge_and_read(acc, new):
    float(new["loss"].compute())  # what a host sync in the loop would look like
    return merge(acc, new)

  monkeypatch.setattr(step_lib, "make_train_step", make_watched)
  if read_loss_every_step:
    monkeypatch.setattr(loop, "merge_metrics", merge_and_read)
  # A step long against reading a batch (32 px, batch 64), so that "not yet done"
  # is what an unsynchronised loop sees.
  config = tiny_config(num_devices=8, image_size=32, batch_size=64, num_train_examples=256,
                       total_steps=12, log_every_steps=100, checkpoint_every_steps=100)
  train.train_and_evaluate(config, str(tmp_path))
  return ready[1:]  # the first step starts from the initial state


def test_the_loop_dispatches_ahead_of_the_device(tmp_path, monkeypatch):
  # Without a host read between logs, the loop queues step n+1 while step n still
  # runs (asynchronous dispatch); a read after every step would serialise them.
  # (jax.transfer_guard cannot show this on a CPU, where arrays live in host memory.)
  assert not all(_readiness_at_dispatch(tmp_path / "a", monkeypatch, False))
  assert all(_readiness_at_dispatch(tmp_path / "b", monkeypatch, True))
