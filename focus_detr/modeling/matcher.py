"""Hungarian matching of predictions to ground truth (focal class cost, L1 and GIoU box costs)."""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..layers import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = ["HungarianMatcher", "focal_class_cost"]


def focal_class_cost(
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Deformable-DETR's class cost: focal loss of the target class as positive minus its focal
    loss as negative. logits (P, K), labels (T,) -> (P, T)."""
    p = logits.sigmoid()[:, labels]
    pos = alpha * (1 - p) ** gamma * -(p + eps).log()
    neg = (1 - alpha) * p**gamma * -(1 - p + eps).log()
    return pos - neg


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimizing
    cost_class * focal class cost + cost_bbox * L1(cxcywh) - cost_giou * GIoU, per image
    (scipy's `linear_sum_assignment`).

    Args:
        cost_class: Default 2.0. cost_bbox: Default 5.0. cost_giou: Default 2.0.
        alpha, gamma: focal cost parameters. Defaults 0.25, 2.0.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.alpha = alpha
        self.gamma = gamma

    def cost_matrix(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        labels: torch.Tensor,
        gt_boxes: torch.Tensor,
    ) -> torch.Tensor:
        """logits (P, K), boxes (P, 4) cxcywh, labels (T,), gt_boxes (T, 4) -> (P, T)."""
        cost = self.cost_class * focal_class_cost(logits, labels, self.alpha, self.gamma)
        cost = cost + self.cost_bbox * torch.cdist(boxes, gt_boxes.to(boxes), p=1)
        giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(gt_boxes))
        return cost - self.cost_giou * giou

    @torch.no_grad()
    def forward(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: List[Dict[str, torch.Tensor]],
        prediction_counts: Optional[Sequence[int]] = None,
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Args:
            outputs: pred_logits (N, Q, K), pred_boxes (N, Q, 4) cxcywh.
            targets: per image labels (n_i,), boxes (n_i, 4) cxcywh.
            prediction_counts: per image, only its first q_i predictions take part (e.g. Sparse
                DETR's kept slots, padded to Q); default all Q.
        Returns:
            per image (prediction indices, target indices), int64 on CPU, min(q_i, n_i) pairs.
        """
        n, q = outputs["pred_logits"].shape[:2]
        labels = torch.cat([t["labels"] for t in targets])
        gt = torch.cat([t["boxes"] for t in targets])
        if len(labels) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in range(n)]
        # one cost matrix for the whole batch, split per image for the assignment
        cost = self.cost_matrix(
            outputs["pred_logits"].flatten(0, 1).float(),
            outputs["pred_boxes"].flatten(0, 1).float(),
            labels,
            gt,
        )
        cost = cost.view(n, q, -1).cpu()
        sizes = [len(t["labels"]) for t in targets]
        counts = [q] * n if prediction_counts is None else prediction_counts
        result = []
        for i, c in enumerate(cost.split(sizes, -1)):
            rows, cols = linear_sum_assignment(c[i, : counts[i]].numpy())
            result.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return result

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, "
            f"cost_giou={self.cost_giou}, alpha={self.alpha}, gamma={self.gamma}"
        )
