"""COCO AP of exported detectors on a config's test set, beside the eager model's: what an
exported runtime or a reduced precision costs in accuracy (tools/evaluate_export.py)."""

import copy
import itertools
from typing import Any, Dict, Optional

from detectron2.config import instantiate
import torch
from detectron2.evaluation import DatasetEvaluators
from detectron2.evaluation.evaluator import inference_context
from torch import nn

from .runtime import ExportedDetector, detect_resized

__all__ = ["ExportedModel", "box_evaluator_config", "evaluate_detectors"]


class ExportedModel(nn.Module):
    """An exported detector (`focus_detr.deploy.load`) called like a detectron2 model in
    inference: detectron2 input dicts ("image" (3, h, w) in the model's input format, after the
    config's test resize; "height"/"width" of the original file) in, [{"instances"}] with boxes
    in the original file's pixels out (`detect_resized`)."""

    def __init__(self, detector: ExportedDetector):
        super().__init__()
        self.detector = detector

    def forward(self, batched_inputs):
        results = []
        for x in batched_inputs:  # the runtimes take one image per call
            h, w = x["image"].shape[-2:]
            results.append(
                {
                    "instances": detect_resized(
                        self.detector, x["image"], x.get("height", h), x.get("width", w)
                    )
                }
            )
        return results


def box_evaluator_config(evaluator_cfg):
    """The box AP part of an evaluator config: a `with_token_selection` pair's first entry (an
    exported graph returns detections only, no token selection), or the config itself."""
    if evaluator_cfg.get("_target_") is DatasetEvaluators:
        return copy.deepcopy(evaluator_cfg.evaluators[0])
    return copy.deepcopy(evaluator_cfg)


def evaluate_detectors(
    cfg, models: Dict[str, nn.Module], max_images: Optional[int] = None
) -> Dict[str, Dict[str, Any]]:
    """Box AP of each model (an eager detector or an `ExportedModel`) on the same images.

    Args:
        cfg: a config with `dataloader.test` and `dataloader.evaluator`.
        models: name -> model in inference mode.
        max_images: evaluate the first this many test batches only (one image each with
            detectron2's test loader; COCO AP is computed over the images evaluated); None: all.
    Returns:
        name -> the evaluator's results (e.g. {"bbox": {"AP": ..., "AP50": ...}}).
    """
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
    loader = instantiate(cfg.dataloader.test)
    batches = list(itertools.islice(loader, max_images)) if max_images else list(loader)
    # COCO AP over the images evaluated only (detectron2's default is the whole dataset, which
    # would count the images left out as missed)
    image_ids = [x["image_id"] for batch in batches for x in batch] if max_images else None
    evaluator_cfg = box_evaluator_config(cfg.dataloader.evaluator)
    if "output_dir" in evaluator_cfg:
        evaluator_cfg.output_dir = None  # nothing written per model
    results = {}
    for name, model in models.items():
        evaluator = instantiate(evaluator_cfg)
        evaluator.reset()
        with inference_context(model), torch.no_grad():
            for batch in batches:
                evaluator.process(batch, model(batch))
        results[name] = evaluator.evaluate(img_ids=image_ids)
    return results
