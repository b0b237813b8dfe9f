"""Config helper: COCO AP and token-selection quality in one evaluator (a LazyConfig line)."""

import copy

from detectron2.config import LazyCall as L
from detectron2.evaluation import DatasetEvaluators

from .token_selection_evaluator import TokenSelectionEvaluator

__all__ = ["with_token_selection"]


def with_token_selection(
    evaluator, dataset_names: str = "${dataloader.test.dataset.names}", assigner=None
):
    """`DatasetEvaluators` config of `evaluator` (e.g. the data config's COCOEvaluator) plus a
    `TokenSelectionEvaluator`, both reading `dataset_names` (an absolute interpolation: moving
    the COCO evaluator into a list breaks its relative "${..test.dataset.names}").

    In a project config::

        dataloader.evaluator = with_token_selection(dataloader.evaluator)

    An evaluator config that already has a `TokenSelectionEvaluator` is returned unchanged (a
    config imported from one that adds it can repeat the line).
    """
    if evaluator.get("_target_") is DatasetEvaluators and any(
        e.get("_target_") is TokenSelectionEvaluator for e in evaluator.evaluators
    ):
        return evaluator
    first = copy.deepcopy(evaluator)
    if "dataset_name" in first:
        first.dataset_name = dataset_names
    selection = L(TokenSelectionEvaluator)(dataset_name=dataset_names)
    if assigner is not None:
        selection.assigner = assigner
    return L(DatasetEvaluators)(evaluators=[first, selection])
