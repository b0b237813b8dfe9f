"""COCO AP (and token-selection quality) of a built model on its config's test set."""

import logging
from typing import Any, Dict

from detectron2.config import instantiate
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset
from torch import nn

from ..evaluation import TokenSelectionEvaluator
from ..modeling.transformer.encoder_api import encoder_selects_tokens
from .selection import record_token_selection

__all__ = ["evaluate_model"]

logger = logging.getLogger(__name__)


def evaluate_model(cfg, model: nn.Module, with_selection: bool = True) -> Dict[str, Any]:
    """Run `cfg.dataloader.test` through `cfg.dataloader.evaluator` (plus a
    `TokenSelectionEvaluator` when the model's encoder selects tokens and `with_selection`).

    Returns:
        detectron2's results dict, e.g. {"bbox": {"AP": ...}, "token_selection": {...}}.
    """
    if "dataloader" not in cfg or "test" not in cfg.dataloader or "evaluator" not in cfg.dataloader:
        raise KeyError(
            "evaluation needs `dataloader.test` and `dataloader.evaluator` in the config"
        )
    loader = instantiate(cfg.dataloader.test)
    evaluators = [instantiate(cfg.dataloader.evaluator)]
    configured = getattr(evaluators[0], "_evaluators", evaluators)
    has_selection = any(isinstance(e, TokenSelectionEvaluator) for e in configured)
    if with_selection and not has_selection and encoder_selects_tokens(model.transformer.encoder):
        names = cfg.dataloader.test.dataset.names
        evaluators.append(TokenSelectionEvaluator(dataset_name=names))
    with record_token_selection(model):  # a dense encoder adds no selection
        return dict(inference_on_dataset(model, loader, DatasetEvaluators(evaluators)))
