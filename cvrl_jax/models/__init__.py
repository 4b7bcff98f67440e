"""Encoders."""

from cvrl_jax.models.resnet import ResNet, feature_dim, resnet

__all__ = ["ResNet", "feature_dim", "resnet"]
