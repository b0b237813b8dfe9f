"""The deformable transformers' initialisation, shared by encoders and decoders."""

from torch import nn

from .ms_deform_attn import MultiScaleDeformableAttention

__all__ = ["init_deformable_transformer"]


def init_deformable_transformer(module: nn.Module) -> None:
    """Xavier-uniform init of every matrix (parameters with more than one dimension) of `module`,
    then Deformable-DETR's init of its `MultiScaleDeformableAttention` modules (offsets on a
    ring, uniform attention weights), which the Xavier pass would otherwise overwrite."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    for m in module.modules():
        if isinstance(m, MultiScaleDeformableAttention):
            m.init_weights()
