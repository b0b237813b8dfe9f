"""`TokenSelectionEvaluator`: precision and recall of a sparse encoder's kept tokens against the
ground-truth foreground labels of Focus-DETR's label assignment, logged beside the COCO AP.

Use with `DatasetEvaluators` in a config (the model's eval outputs must carry
``"token_selection"``, each image's `TokenSelection`: `focus_detr.analysis.record_token_selection`
sets that up)::

    dataloader.evaluator = L(DatasetEvaluators)(evaluators=[
        L(COCOEvaluator)(dataset_name="${...test.dataset.names}", tasks=("bbox",)),
        L(TokenSelectionEvaluator)(dataset_name="${...test.dataset.names}"),
    ])
"""

import logging
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Union

import torch
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..modeling.focus import ForegroundLabelAssigner
from ..modeling.transformer.encoder_api import TokenSelection
from .ground_truth import GroundTruthBoxes
from .selection_metrics import SelectionCounts, level_of_tokens, selection_counts

__all__ = ["TokenSelectionEvaluator", "foreground_labels"]

logger = logging.getLogger(__name__)


def foreground_labels(
    selection: TokenSelection,
    boxes_xyxy: torch.Tensor,
    assigner: Optional[ForegroundLabelAssigner] = None,
) -> torch.Tensor:
    """(N,) bool ground-truth foreground label of every token of one image's selection.

    Args:
        selection: one image's `TokenSelection` (batch of one, `TokenSelection.per_image`).
        boxes_xyxy: (M, 4) ground-truth boxes in the model input's pixels.
        assigner: a `ForegroundLabelAssigner`; default the published one with the selection's
            strides.
    """
    shapes = selection.spatial_shapes.cpu()
    strides = selection.strides
    if assigner is None:
        assigner = ForegroundLabelAssigner(**({"strides": strides} if strides else {}))
    elif strides and tuple(int(s) for s in strides) != assigner.strides:
        raise ValueError(
            f"label assignment strides {assigner.strides} differ from the model's "
            f"feature strides {tuple(strides)}"
        )
    padding = selection.padding_mask[:1].cpu()
    boxes = boxes_xyxy.detach().float().cpu().reshape(1, -1, 4)
    box_valid = torch.ones(boxes.shape[:2], dtype=torch.bool)
    return assigner(boxes, box_valid, shapes, padding)[0]


def _layer_order(key: str):
    """ "layer10" -> ("layer", 10): numeric order within each kind."""
    stem = key.rstrip("0123456789")
    return stem, int(key[len(stem) :])


class TokenSelectionEvaluator(DatasetEvaluator):
    """Accumulates token counts over the dataset (micro average) and reports, in percent:

    - ``precision``, ``recall`` (overall) and ``level{i}_precision``, ``level{i}_recall`` per
      level of the first encoder layer's kept tokens (Focus: the foreground selection of the FTS,
      the largest of the cascade; Sparse DETR: its one selection), plus ``keep_fraction`` and
      ``foreground_fraction`` of the valid tokens (the chance level of precision);
    - ``layer{j}_precision``, ``layer{j}_recall`` of every encoder layer's kept tokens;
    - ``object{j}_precision``, ``object{j}_recall`` of Focus's object tokens per layer.

    A metric without a denominator (no foreground token at a level, e.g. the largest level on
    small images; nothing kept) is left out of the results and named, with the reason, in the
    log: metrics must be numbers and NaN is not valid JSON.

    Args:
        dataset_name: registered dataset(s) whose annotations give the ground truth (the test
            loader drops them); not needed when the inputs carry "instances".
        assigner: `ForegroundLabelAssigner`; default the published one.
        distributed: gather the counts from all processes. Default True.
    """

    def __init__(
        self,
        dataset_name: Optional[Union[str, Sequence[str]]] = None,
        assigner=None,
        distributed: bool = True,
    ):
        self._dataset_name = dataset_name
        self._assigner = assigner
        self._distributed = distributed
        self._ground_truth: Optional[GroundTruthBoxes] = None
        self.reset()

    def reset(self):
        self._counts: Dict[str, SelectionCounts] = {}
        self._images = 0
        self._missing = 0

    def _boxes(self, x) -> torch.Tensor:
        if "instances" in x and x["instances"].has("gt_boxes"):
            return x["instances"].gt_boxes.tensor
        if self._dataset_name is None:
            raise ValueError(
                "inputs carry no 'instances': give TokenSelectionEvaluator a "
                "dataset_name to read the ground truth from"
            )
        if self._ground_truth is None:
            self._ground_truth = GroundTruthBoxes(self._dataset_name)
        return self._ground_truth.boxes_xyxy(x)

    def _add(self, key: str, counts: SelectionCounts):
        self._counts[key] = counts if key not in self._counts else self._counts[key] + counts

    def process(self, inputs, outputs):
        for x, out in zip(inputs, outputs):
            selection = out.get("token_selection")
            if selection is None:
                self._missing += 1
                continue
            shapes = selection.spatial_shapes.cpu()
            num_levels = shapes.shape[0]
            valid = selection.valid_tokens()[0].cpu()
            level = level_of_tokens(shapes)
            fg = foreground_labels(selection, self._boxes(x), self._assigner)
            for kind, masks in (
                ("layer", selection.kept_masks()),
                ("object", selection.object_masks()),
            ):
                for j, kept in enumerate(masks[:, 0].cpu()):
                    counts = selection_counts(kept, fg, valid, level, num_levels)
                    self._add(f"{kind}{j}", counts)
            self._images += 1

    def evaluate(self):
        counts, images, missing = self._counts, self._images, self._missing
        if self._distributed and comm.get_world_size() > 1:
            comm.synchronize()
            gathered = comm.gather((counts, images, missing), dst=0)
            if not comm.is_main_process():
                return {}
            counts, images, missing = {}, 0, 0
            for c, i, m in gathered:
                for k, v in c.items():
                    counts[k] = v if k not in counts else counts[k] + v
                images += i
                missing += m
        if missing:
            logger.warning(
                f"{missing} model output(s) carried no 'token_selection' (dense "
                "encoder, or the model does not expose its selection in eval)"
            )
        if not counts:
            logger.warning("TokenSelectionEvaluator: no token selections to evaluate")
            return {}
        results = OrderedDict()
        undefined = {}
        first = counts["layer0"].summary()
        undefined.update(first.pop("undefined", {}))
        for key in sorted(counts, key=_layer_order):
            scope = counts[key].summary(prefix=f"{key}_")
            for metric in ("precision", "recall"):
                first[f"{key}_{metric}"] = scope[f"{key}_{metric}"]
            undefined.update(
                {k: v for k, v in scope.pop(f"{key}_undefined", {}).items() if k in first}
            )
        # a metric without a denominator is left out (metrics must be numbers, never NaN)
        results.update({k: 100.0 * v for k, v in first.items() if v is not None})
        if undefined:
            logger.info(
                "Token selection metrics left out: "
                + "; ".join(f"{k}: {why}" for k, why in undefined.items())
            )
        logger.info(
            f"Token selection on {images} image(s): precision "
            f"{results.get('precision', float('nan')):.1f}"
            f"%, recall {results.get('recall', float('nan')):.1f}% (keep "
            f"{results['keep_fraction']:.1f}% of valid tokens, foreground "
            f"{results['foreground_fraction']:.1f}%)"
        )
        return OrderedDict(token_selection=results)
