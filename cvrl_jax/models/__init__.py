"""Encoders."""

from cvrl_jax.models.resnet import ResNet, feature_dim, resnet
from cvrl_jax.models.vit import ViT

__all__ = ["ResNet", "ViT", "feature_dim", "resnet"]
