"""Test set-up: 8 simulated CPU devices, TFDS pointed at the shared offline data."""

import os

# Must happen before jax is imported anywhere: every multi-device path is tested
# on 8 simulated devices, like a TPU v3-8 slice.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_TFDS = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tfds"))
