"""Learning-rate scaling, schedules and the LARS exclusion mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvrl_jax import optim
from configs import simclr_v2


def test_lr_scaling():
  assert optim.scaled_learning_rate(0.3, 4096, "linear") == pytest.approx(4.8)
  assert optim.scaled_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
  with pytest.raises(ValueError, match="lr_scaling"):
    optim.scaled_learning_rate(0.3, 256, "log")


def test_warmup_then_cosine():
  s = optim.learning_rate_schedule(2.0, total_steps=100, warmup_steps=10)
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(1.0)
  assert float(s(10)) == pytest.approx(2.0)
  assert float(s(55)) == pytest.approx(1.0, rel=1e-5)  # half-way through the cosine
  assert float(s(100)) == pytest.approx(0.0, abs=1e-6)
  assert all(float(s(i)) >= float(s(i + 1)) for i in range(10, 100))


def test_step_schedule_divides_by_ten():
  s = optim.learning_rate_schedule(1.0, 100, 0, "step", (0.6, 0.8))
  assert [float(s(i)) for i in (0, 59, 61, 81)] == pytest.approx([1.0, 1.0, 0.1, 0.01])


def test_decay_mask_excludes_biases_and_batchnorm():
  params = {"conv": {"kernel": jnp.ones((3, 3, 3, 8))}, "bn": {"scale": jnp.ones(8),
            "bias": jnp.zeros(8)}, "dense": {"kernel": jnp.ones((8, 2)), "bias": jnp.ones(2)}}
  mask = optim.decay_mask(params)
  assert mask == {"conv": {"kernel": True}, "bn": {"scale": False, "bias": False},
                  "dense": {"kernel": True, "bias": False}}


def test_probe_gets_its_own_adam_and_the_model_lars():
  config = simclr_v2.get_config("cifar10")
  tx, _ = optim.create_optimizer(config, 256, total_steps=10, steps_per_epoch=5)
  params = {"encoder": {"kernel": jnp.ones((4, 4))}, "probe": {"kernel": jnp.ones((4, 2))}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 100.0), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Adam's first step moves every weight by its learning rate, whatever the gradient.
  np.testing.assert_allclose(updates["probe"]["kernel"], -1e-3, rtol=1e-4)
  # The model is at step 0 of its warm-up: learning rate 0.
  np.testing.assert_allclose(updates["encoder"]["kernel"], 0.0)


def test_lars_leaves_excluded_params_unadapted_and_undecayed():
  """A 1-D param's LARS update is plain momentum SGD: no trust ratio, no decay."""
  config = simclr_v2.get_config("cifar10")
  config.optimizer.weight_decay = 0.5
  tx, schedule = optim.create_optimizer(config, 256, total_steps=10, steps_per_epoch=5)
  params = {"bias": jnp.full((4,), 3.0), "kernel": jnp.full((2, 2), 3.0)}
  grads = {"bias": jnp.full((4,), 0.1), "kernel": jnp.full((2, 2), 0.1)}
  state = tx.init(params)
  for _ in range(3):  # past step 0, where the warm-up rate is 0
    updates, state = tx.update(grads, state, params)
  # optax's LARS applies momentum to lr-scaled steps: by the third step the
  # trace holds 0.1 * (lr_2 + 0.9 lr_1 + 0.81 lr_0).
  plain = -0.1 * sum(0.9**k * float(schedule(2 - k)) for k in range(3))
  np.testing.assert_allclose(updates["bias"], plain, rtol=1e-5)
  # The kernel is decayed and trust-ratio scaled, so its update differs.
  assert not np.allclose(updates["kernel"], plain, rtol=1e-2)
