"""Multi-scale deformable attention: one functional core with swappable backends, and the module."""
from .functional import ms_deform_attn
from .module import MultiScaleDeformableAttention

__all__ = ["ms_deform_attn", "MultiScaleDeformableAttention"]
