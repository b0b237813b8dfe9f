"""DINO's training losses: sigmoid focal class loss, L1 and GIoU box losses on Hungarian-matched
predictions of the last decoder layer, of every earlier layer (`_0`..), of the two-stage
proposals (`_enc`), and on the denoising queries (`_dn`, `_dn_0`..)."""

import re
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from ..layers import box_cxcywh_to_xyxy, generalized_box_iou
from .denoising import DenoisingMeta

__all__ = ["DINOCriterion"]

Indices = List[Tuple[torch.Tensor, torch.Tensor]]
_SUFFIX = re.compile(r"_(enc|dn|dn_\d+|\d+)$")


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class DINOCriterion(nn.Module):
    """Computes and weights DINO's losses.

    Loss names: `loss_class`, `loss_bbox`, `loss_giou`, each also with suffix `_{i}` (decoder
    layer i < last), `_enc` (two-stage proposals), `_dn` and `_dn_{i}` (denoising queries of the
    last / layer i). Every term is divided by the number of ground-truth boxes of the batch
    (averaged over processes, at least 1); denoising terms by that number times the number of
    denoising groups, as DINO does.

    Args:
        num_classes: classes. Default 80.
        matcher: a `HungarianMatcher`.
        weight_dict: loss weights. A name not listed takes the weight of its base name without
            the suffix (so {"loss_class": 1, "loss_bbox": 5, "loss_giou": 2} weights every
            auxiliary, encoder and denoising term the same way, as DINO's configs do).
        alpha, gamma: focal loss parameters. Defaults 0.25, 2.0.
    """

    def __init__(
        self,
        num_classes: int = 80,
        matcher: Optional[nn.Module] = None,
        weight_dict: Optional[Dict[str, float]] = None,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ):
        super().__init__()
        if matcher is None:
            raise ValueError("DINOCriterion needs a matcher")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(
            weight_dict or {"loss_class": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
        )
        self.alpha = alpha
        self.gamma = gamma

    # ---- loss terms (unweighted) -------------------------------------------------------------
    def loss_labels(
        self, logits: torch.Tensor, targets, indices: Indices, num_boxes: float
    ) -> torch.Tensor:
        """Sigmoid focal loss over all queries and classes; matched queries' target is their
        object's class, every other entry 0. logits (N, Q, K)."""
        onehot = torch.zeros_like(logits)
        batch, src = self._src_index(indices)
        labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        onehot[batch.to(logits.device), src.to(logits.device), labels] = 1.0
        loss = sigmoid_focal_loss(logits, onehot, self.alpha, self.gamma, reduction="sum")
        return loss / num_boxes

    def loss_boxes(
        self, boxes: torch.Tensor, targets, indices: Indices, num_boxes: float
    ) -> Dict[str, torch.Tensor]:
        """L1 and 1 - GIoU between matched predictions and their boxes (cxcywh). boxes (N, Q, 4)."""
        batch, src = self._src_index(indices)
        pred = boxes[batch.to(boxes.device), src.to(boxes.device)]
        gt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(pred)
        giou = generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(gt)).diagonal()
        return {
            "loss_bbox": F.l1_loss(pred, gt, reduction="sum") / num_boxes,
            "loss_giou": (1 - giou).sum() / num_boxes,
        }

    @staticmethod
    def _src_index(indices: Indices):
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        return batch, torch.cat([src for src, _ in indices])

    def _terms(self, out: Dict[str, torch.Tensor], targets, indices, num_boxes, suffix: str):
        terms = {"loss_class": self.loss_labels(out["pred_logits"], targets, indices, num_boxes)}
        terms.update(self.loss_boxes(out["pred_boxes"], targets, indices, num_boxes))
        return {k + suffix: v for k, v in terms.items()}

    def weight(self, name: str) -> float:
        if name in self.weight_dict:
            return self.weight_dict[name]
        base = _SUFFIX.sub("", name)
        if base not in self.weight_dict:
            raise KeyError(
                f"no weight for loss {name!r} (nor {base!r}) in weight_dict "
                f"{sorted(self.weight_dict)}"
            )
        return self.weight_dict[base]

    # ---- all terms ---------------------------------------------------------------------------
    def num_boxes(self, targets, device) -> float:
        n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if _world_size() > 1:
            torch.distributed.all_reduce(n)
        return max(n.item() / _world_size(), 1.0)

    def forward(
        self,
        outputs: Dict,
        targets: List[Dict[str, torch.Tensor]],
        dn_outputs: Optional[Dict] = None,
        dn_meta: Optional[DenoisingMeta] = None,
        dn_indices: Optional[Indices] = None,
    ) -> Dict[str, torch.Tensor]:
        """Args:
            outputs: pred_logits (N, Q, K), pred_boxes (N, Q, 4), aux_outputs (list of the same
                for the earlier decoder layers), enc_outputs (the same for the proposals).
            targets: per image labels (n_i,), boxes (n_i, 4) normalized cxcywh.
            dn_outputs: the same structure for the denoising queries (no enc_outputs), or None.
            dn_meta, dn_indices: their layout and (query, target) indices.
        Returns:
            weighted losses.
        """
        device = outputs["pred_logits"].device
        num_boxes = self.num_boxes(targets, device)
        layers = [("", outputs)] + [
            (f"_{i}", o) for i, o in enumerate(outputs.get("aux_outputs", []))
        ]
        if "enc_outputs" in outputs:
            layers.append(("_enc", outputs["enc_outputs"]))
        losses = {}
        for suffix, out in layers:
            losses.update(self._terms(out, targets, self.matcher(out, targets), num_boxes, suffix))

        dn_layers = (
            [("_dn", dn_outputs)]
            + [(f"_dn_{i}", o) for i, o in enumerate(dn_outputs.get("aux_outputs", []))]
            if dn_outputs is not None
            else []
        )
        for suffix, out in dn_layers:
            losses.update(
                self._terms(out, targets, dn_indices, num_boxes * dn_meta.num_groups, suffix)
            )
        if dn_outputs is None:  # same keys every step (logging, distributed reductions)
            zero = outputs["pred_logits"].sum() * 0.0
            num_aux = len(outputs.get("aux_outputs", []))
            for suffix in ["_dn"] + [f"_dn_{i}" for i in range(num_aux)]:
                for name in ("loss_class", "loss_bbox", "loss_giou"):
                    losses[name + suffix] = zero
        return {k: v * self.weight(k) for k, v in losses.items()}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, weight_dict={self.weight_dict}, "
            f"alpha={self.alpha}, gamma={self.gamma}"
        )
