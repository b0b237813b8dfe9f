"""Backbones: detectron2's `ResNet` (these helpers build its stages) and timm models (Swin)."""
from .resnet import make_resnet_stages, resnet_out_channels
from .timm_backbone import TimmBackbone

__all__ = ["TimmBackbone", "make_resnet_stages", "resnet_out_channels"]
