"""Foreground loss of the token selector (paper Eq. 7): sigmoid focal loss on token labels."""

from typing import Dict, List, Optional

import torch
from torchvision.ops import sigmoid_focal_loss

from ..transformer.encoder_api import check_padding_mode
from .label_assignment import ForegroundLabelAssigner, pad_boxes

__all__ = ["foreground_focal_loss", "ForegroundLoss"]


def foreground_focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    padding_mask: Optional[torch.Tensor] = None,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Per image: focal loss summed over its valid tokens / max(1, its positive tokens); then the
    mean over images (the published normalisation; padded tokens are left out here).

    Args:
        logits: (N, S) foreground logits.
        labels: (N, S) bool.
        padding_mask: (N, S) bool, True at padded tokens; None = no padding.
    Returns:
        scalar loss.
    """
    # torchvision's form takes log(p_t) from binary_cross_entropy_with_logits: finite for any logit
    loss = sigmoid_focal_loss(logits, labels.to(logits.dtype), alpha, gamma, reduction="none")
    if padding_mask is not None:
        loss = loss.masked_fill(padding_mask, 0.0)
        labels = labels & ~padding_mask
    num_positive = labels.sum(1).clamp(min=1).to(loss.dtype)
    return (loss.sum(1) / num_positive).mean()


class ForegroundLoss:
    """Labels tokens from ground-truth boxes and scores the selector's logits (`select_loss`).

    Args:
        assigner: the label assignment (strides, scale ranges); default the published one.
        weight: loss weight. Default 1.5.
        alpha, gamma: focal loss parameters. Defaults 0.25, 2.
        name: key of the loss in the loss dict. Default "select_loss" (the published name).
        padding: "masked" (default): padded tokens are left out of the focal sum; "published":
            they count as negatives, as in the published code (labels never mark them).
    """

    def __init__(
        self,
        assigner: Optional[ForegroundLabelAssigner] = None,
        weight: float = 1.5,
        alpha: float = 0.25,
        gamma: float = 2.0,
        name: str = "select_loss",
        padding: str = "masked",
    ):
        self.padding = check_padding_mode(padding)
        self.assigner = assigner if assigner is not None else ForegroundLabelAssigner()
        self.weight = weight
        self.alpha = alpha
        self.gamma = gamma
        self.name = name

    def labels(self, boxes_xyxy: List[torch.Tensor], spatial_shapes, padding_mask) -> torch.Tensor:
        """(N, S) bool labels from per-image absolute xyxy boxes (M_i, 4)."""
        boxes, valid = pad_boxes([b.to(padding_mask.device) for b in boxes_xyxy])
        return self.assigner(boxes, valid, spatial_shapes, padding_mask)

    def __call__(
        self,
        logits: torch.Tensor,
        boxes_xyxy: List[torch.Tensor],
        spatial_shapes,
        padding_mask: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        """{name: weight * loss} for (N, S) `logits` and per-image absolute xyxy boxes."""
        if len(boxes_xyxy) != logits.shape[0]:
            raise ValueError(f"{len(boxes_xyxy)} target box sets for a batch of {logits.shape[0]}")
        labels = self.labels(boxes_xyxy, spatial_shapes, padding_mask)
        # the loss only runs in training, so "published" needs no train/eval switch here
        excluded = padding_mask if self.padding == "masked" else None
        loss = foreground_focal_loss(logits, labels, excluded, self.alpha, self.gamma)
        return {self.name: loss * self.weight}
