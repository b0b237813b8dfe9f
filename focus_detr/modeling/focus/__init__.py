"""Focus-DETR's encoder components (paper Sec. 3): foreground token selector, label assignment and
foreground loss, multi-category object scores, dual-attention encoder layer, Focus encoder.

Each is usable on its own in other DETR-like models.
"""

from .checkpoint_keys import FOCUS_DETR_KEY_ALIASES
from .dual_attention_layer import DualAttentionEncoderLayer
from .focus_encoder import FocusEncoder, target_boxes_xyxy
from .foreground_loss import ForegroundLoss, foreground_focal_loss
from .foreground_token_selector import (
    MODULATION_TARGETS,
    MODULATIONS,
    PUBLISHED_CASCADE_RATIOS,
    ForegroundSelection,
    ForegroundTokenSelector,
)
from .label_assignment import (
    PUBLISHED_SCALE_RANGES,
    SIZE_MEASURES,
    ForegroundLabelAssigner,
    overlapping_scale_ranges,
    pad_boxes,
)
from .object_score import OBJECT_SCORE_MODES, object_token_scores
from .score_network import TokenScoreNetwork
from .token_ops import gather_tokens, level_valid_sizes, resize_valid_region, scatter_tokens

__all__ = [
    "FOCUS_DETR_KEY_ALIASES",
    "DualAttentionEncoderLayer",
    "FocusEncoder",
    "ForegroundLabelAssigner",
    "ForegroundLoss",
    "ForegroundSelection",
    "ForegroundTokenSelector",
    "MODULATIONS",
    "MODULATION_TARGETS",
    "OBJECT_SCORE_MODES",
    "PUBLISHED_CASCADE_RATIOS",
    "PUBLISHED_SCALE_RANGES",
    "SIZE_MEASURES",
    "TokenScoreNetwork",
    "foreground_focal_loss",
    "gather_tokens",
    "level_valid_sizes",
    "object_token_scores",
    "overlapping_scale_ranges",
    "pad_boxes",
    "resize_valid_region",
    "scatter_tokens",
    "target_boxes_xyxy",
]
