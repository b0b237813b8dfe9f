"""Evaluators beside detectron2's COCO AP: token-selection quality of sparse encoders."""

from .config import with_token_selection
from .ground_truth import GroundTruthBoxes
from .token_selection_evaluator import TokenSelectionEvaluator, foreground_labels, kept_mask

__all__ = [
    "GroundTruthBoxes",
    "TokenSelectionEvaluator",
    "foreground_labels",
    "kept_mask",
    "with_token_selection",
]
