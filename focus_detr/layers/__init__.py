"""Generic layers shared by every model (detrex's `detrex.layers`)."""
from .ms_deform_attn import MultiScaleDeformableAttention, ms_deform_attn

__all__ = ["MultiScaleDeformableAttention", "ms_deform_attn"]
