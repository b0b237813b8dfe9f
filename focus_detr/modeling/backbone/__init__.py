"""Backbone helpers (detectron2's `ResNet` is the backbone; these build its stages)."""
from .resnet import make_resnet_stages, resnet_out_channels

__all__ = ["make_resnet_stages", "resnet_out_channels"]
