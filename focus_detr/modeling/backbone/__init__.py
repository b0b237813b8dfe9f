"""Backbones: detectron2's `ResNet` (these helpers build its stages), the Swin Transformer of the
published Swin models, and any timm feature extractor."""

from .resnet import make_resnet_stages, resnet_out_channels
from .swin import SwinTransformer
from .timm_backbone import TimmBackbone

__all__ = ["SwinTransformer", "TimmBackbone", "make_resnet_stages", "resnet_out_channels"]
