"""Generic layers shared by every model (detrex's `detrex.layers`)."""

from .attention import MultiheadAttention
from .box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, generalized_box_iou, inverse_sigmoid
from .mlp import FFN, MLP
from .ms_deform_attn import MultiScaleDeformableAttention, ms_deform_attn
from .position_embedding import PositionEmbeddingSine, get_sine_pos_embed
from .reduced_precision import enable_reduced_precision
from .weight_init import init_deformable_transformer

__all__ = [
    "FFN",
    "MLP",
    "MultiScaleDeformableAttention",
    "MultiheadAttention",
    "PositionEmbeddingSine",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "enable_reduced_precision",
    "generalized_box_iou",
    "get_sine_pos_embed",
    "init_deformable_transformer",
    "inverse_sigmoid",
    "ms_deform_attn",
]
