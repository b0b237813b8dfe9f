"""Evaluators: COCO AP on the ground truth that training loads, and the token-selection quality
of sparse encoders."""

from .coco import COCOEvaluator
from .config import with_token_selection
from .ground_truth import GroundTruthBoxes
from .token_selection_evaluator import TokenSelectionEvaluator, foreground_labels, kept_mask

__all__ = [
    "COCOEvaluator",
    "GroundTruthBoxes",
    "TokenSelectionEvaluator",
    "foreground_labels",
    "kept_mask",
    "with_token_selection",
]
