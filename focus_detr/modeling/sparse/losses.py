"""Supervision of the Sparse DETR encoder: the token score network learns the decoder
cross-attention map (multilabel soft margin loss), and optionally each encoder layer's kept tokens
predict objects through their own class and box heads (Hungarian-matched DETR losses)."""

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention_map import decoder_attention_map, top_count_targets

__all__ = ["masked_multilabel_soft_margin_loss", "AttentionMapLoss", "EncoderAuxiliaryLoss"]


def masked_multilabel_soft_margin_loss(
    logits: torch.Tensor, targets: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """`F.multilabel_soft_margin_loss` with the tokens as labels, padded tokens left out: per image
    the mean over its valid tokens of the binary cross entropy, then the mean over images.

    Without padding this equals `F.multilabel_soft_margin_loss(logits, targets)`.

    Args:
        logits: (N, S); targets: (N, S) in [0, 1]; padding_mask: (N, S) bool or None.
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    if padding_mask is None:
        return loss.mean()
    valid = (~padding_mask).to(loss.dtype)
    return ((loss * valid).sum(1) / valid.sum(1).clamp(min=1)).mean()


class AttentionMapLoss:
    """Targets from the decoder cross-attention map, multilabel soft margin loss on the token
    score network's logits.

    Args:
        weight: loss weight. Default 1.0 (published).
        name: key in the loss dict. Default "loss_mask_prediction" (the published name).
        pixel_offset: see :func:`decoder_attention_map`. Default 0.5 (matches the sampling).
    """

    def __init__(
        self, weight: float = 1.0, name: str = "loss_mask_prediction", pixel_offset: float = 0.5
    ):
        self.weight = weight
        self.name = name
        self.pixel_offset = pixel_offset

    def targets(
        self,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: torch.Tensor,
        counts: torch.Tensor,
    ) -> torch.Tensor:
        """(N, S) binary targets: the top `counts` valid tokens of the attention map (of the
        given decoder queries: pass only the matching queries, not the denoising ones)."""
        with torch.no_grad():
            dam = decoder_attention_map(
                sampling_locations,
                attention_weights,
                spatial_shapes,
                level_start_index,
                self.pixel_offset,
            )
            return top_count_targets(dam, padding_mask, counts)

    def __call__(
        self, logits: torch.Tensor, targets: torch.Tensor, padding_mask: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        return {
            self.name: self.weight
            * masked_multilabel_soft_margin_loss(logits, targets, padding_mask)
        }

    def __repr__(self) -> str:
        return (
            f"AttentionMapLoss(weight={self.weight}, name={self.name!r}, "
            f"pixel_offset={self.pixel_offset})"
        )


class EncoderAuxiliaryLoss:
    """Hungarian-matched class / L1 / GIoU losses of the encoder layers' kept-token predictions,
    with a DETR criterion's matcher, loss terms and weights (Sparse DETR's auxiliary encoder
    loss: the main loss weights).

    Loss names: `loss_class_enc_{i}`, `loss_bbox_enc_{i}`, `loss_giou_enc_{i}` for encoder layer
    i; each weighted by `criterion.weight_dict[name]` when listed, else by the base name's weight
    (`loss_class`, ...).

    Args:
        criterion: provides `matcher`, `loss_labels`, `loss_boxes`, `num_boxes`, `weight_dict`
            and `weight` (a `DINOCriterion`).
    """

    def __init__(self, criterion: nn.Module):
        self.criterion = criterion

    def weight(self, name: str, base: str) -> float:
        weights = self.criterion.weight_dict
        return weights[name] if name in weights else self.criterion.weight(base)

    def match(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        slot_valid: torch.Tensor,
        targets: List[Dict[str, torch.Tensor]],
    ):
        """Hungarian matching of each image's valid kept slots (a prefix of its slot list) to
        its targets: one batched cost matrix, each image assigned on its valid rows only.

        Args:
            logits: (N, K, num_classes); boxes: (N, K, 4) normalized cxcywh.
            slot_valid: (N, K) bool, True for the first counts[n] slots of image n.
            targets: per image `labels` (n_i,), `boxes` (n_i, 4) normalized cxcywh.
        Returns:
            per image (slot indices, target indices), int64 on CPU, min(counts[n], n_i) pairs.
        """
        return self.criterion.matcher(
            {"pred_logits": logits, "pred_boxes": boxes},
            targets,
            prediction_counts=slot_valid.sum(1).tolist(),
        )

    def __call__(
        self,
        logits: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        slot_valid: torch.Tensor,
        targets: List[Dict[str, torch.Tensor]],
    ) -> Dict[str, torch.Tensor]:
        """Args:
        logits: per encoder layer (N, K, num_classes) kept-token class logits.
        boxes: per encoder layer (N, K, 4) normalized cxcywh boxes.
        slot_valid: (N, K) bool, valid kept slots (a prefix per image).
        targets: per image `labels` (n,), `boxes` (n, 4) normalized cxcywh.
        """
        if not logits:
            return {}
        num_boxes = self.criterion.num_boxes(targets, logits[0].device)
        # invalid slots: a logit whose focal loss and gradient are exactly 0
        floor = torch.finfo(logits[0].dtype).min
        losses = {}
        for layer, (layer_logits, layer_boxes) in enumerate(zip(logits, boxes)):
            indices = self.match(layer_logits, layer_boxes, slot_valid, targets)
            masked = layer_logits.masked_fill(~slot_valid[..., None], floor)
            terms = {"loss_class": self.criterion.loss_labels(masked, targets, indices, num_boxes)}
            terms.update(self.criterion.loss_boxes(layer_boxes, targets, indices, num_boxes))
            for base, value in terms.items():
                name = f"{base}_enc_{layer}"
                losses[name] = value * self.weight(name, base)
        return losses

    def __repr__(self) -> str:
        return f"EncoderAuxiliaryLoss(criterion={self.criterion.__class__.__name__})"
