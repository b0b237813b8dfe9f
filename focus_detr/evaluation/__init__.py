"""Evaluators: COCO AP on the ground truth that training loads, and the token-selection quality
of sparse encoders."""

from .coco import COCOEvaluator
from .config import with_token_selection
from .ground_truth import GroundTruthBoxes
from .selection_metrics import (
    SelectionCounts,
    foreground_per_level,
    kept_foreground_recall,
    level_of_tokens,
    selection_counts,
)
from .token_selection_evaluator import TokenSelectionEvaluator, foreground_labels

__all__ = [
    "COCOEvaluator",
    "GroundTruthBoxes",
    "SelectionCounts",
    "TokenSelectionEvaluator",
    "foreground_labels",
    "foreground_per_level",
    "kept_foreground_recall",
    "level_of_tokens",
    "selection_counts",
    "with_token_selection",
]
