"""The loop compiles its step and its eval function once, across epochs and evals."""

import logging

import jax
from test_train import tiny_config

from cvrl_jax import train


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
