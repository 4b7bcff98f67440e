"""Encoders (ResNet, ViT), the factory that builds one from ``config.model``, heads."""

from cvrl_jax.models.encoder import compute_dtype, make_encoder
from cvrl_jax.models.resnet import ResNet, feature_dim, resnet
from cvrl_jax.models.vit import ViT

__all__ = ["ResNet", "ViT", "compute_dtype", "feature_dim", "make_encoder", "resnet"]
