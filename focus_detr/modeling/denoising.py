"""Contrastive denoising queries (DINO): noised copies of the ground truth that the decoder must
reconstruct (positives) or reject (negatives), in groups that cannot see each other."""

from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional

import torch
from torch import nn

from ..layers import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid

__all__ = ["ContrastiveDenoising", "DenoisingMeta", "DenoisingQueries", "pad_targets"]


@dataclass
class DenoisingMeta:
    """Layout of the denoising queries: `num_groups` groups of `group_size` = 2 * max_gt queries;
    in group g, slot g * group_size + t is the positive copy of ground truth t and slot
    g * group_size + max_gt + t its negative copy (slots t >= an image's object count are
    padding)."""

    num_groups: int
    max_gt: int

    @property
    def group_size(self) -> int:
        return 2 * self.max_gt

    @property
    def num_queries(self) -> int:
        return self.num_groups * self.group_size


class DenoisingQueries(NamedTuple):
    """What `ContrastiveDenoising` adds to the decoder's input (unpacks as a 4-tuple too).

    Attributes:
        content: (N, D, C) embedded noised labels; boxes: (N, D, 4) unsigmoided noised boxes.
        attention_mask: (D + num_matching, D + num_matching) bool, True where attention is
            blocked (groups cannot see each other; matching queries cannot see denoising ones).
        meta: the queries' layout.
    """

    content: torch.Tensor
    boxes: torch.Tensor
    attention_mask: torch.Tensor
    meta: DenoisingMeta


def pad_targets(targets: List[Dict[str, torch.Tensor]]):
    """Stack per-image labels (n_i,) and boxes (n_i, 4) into (N, M) / (N, M, 4) tensors padded to
    M = max n_i, with a (N, M) bool mask of real entries."""
    counts = torch.as_tensor([len(t["labels"]) for t in targets])
    m = int(counts.max()) if len(targets) else 0
    device = targets[0]["boxes"].device
    valid = torch.arange(m)[None] < counts[:, None]
    labels = torch.zeros(len(targets), m, dtype=torch.long, device=device)
    boxes = torch.zeros(len(targets), m, 4, device=device)
    valid = valid.to(device)
    if m:
        labels[valid] = torch.cat([t["labels"] for t in targets])
        boxes[valid] = torch.cat([t["boxes"] for t in targets]).to(boxes.dtype)
    return labels, boxes, valid


class ContrastiveDenoising(nn.Module):
    """Builds DINO's contrastive denoising (CDN) queries and the decoder self-attention mask.

    Each group holds one positive and one negative copy of every ground-truth box. Labels are
    flipped to a uniformly random class with probability `label_noise_ratio / 2`. Box corners
    move by +-u * (w/2, h/2) * `box_noise_scale`, u ~ U[0, 1) for positives and U[1, 2) for
    negatives, then are clipped to [0, 1].

    Args:
        num_classes: classes of the label embedding. Default 80.
        num_dn_queries: budget of positive queries per image (groups = budget // max objects,
            at least 1). 0 disables denoising. Default 100.
        label_noise_ratio: Default 0.5.
        box_noise_scale: Default 1.0.
    """

    def __init__(
        self,
        num_classes: int = 80,
        num_dn_queries: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.num_dn_queries = num_dn_queries
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale

    def attention_mask(self, meta: DenoisingMeta, num_matching: int, device=None) -> torch.Tensor:
        """(D + num_matching, D + num_matching) bool, True = blocked: matching queries see no
        denoising query; a denoising query sees its own group and every matching query."""
        d = meta.num_queries
        group = torch.arange(d + num_matching, device=device) // meta.group_size
        group[d:] = -1  # matching queries
        is_dn_key = torch.arange(d + num_matching, device=device) < d
        return is_dn_key[None, :] & (group[:, None] != group[None, :])

    def forward(
        self, targets: List[Dict[str, torch.Tensor]], label_enc: nn.Embedding, num_matching: int
    ) -> Optional[DenoisingQueries]:
        """Args:
            targets: per image {"labels": (n,) int64, "boxes": (n, 4) normalized cxcywh}.
            label_enc: embedding of the (noised) labels, (num_classes, C).
            num_matching: number of matching (two-stage) queries after the denoising ones.

        Returns:
            None when disabled or no image has objects; else the `DenoisingQueries`.
        """
        if self.num_dn_queries <= 0:
            return None
        labels, boxes, valid = pad_targets(targets)
        n, m = labels.shape
        if m == 0:
            return None
        meta = DenoisingMeta(num_groups=max(self.num_dn_queries // m, 1), max_gt=m)
        shape = (n, meta.num_groups, 2, m)  # (image, group, positive/negative, object)
        labels = labels[:, None, None].expand(shape).clone()
        boxes = boxes[:, None, None].expand(*shape, 4)
        if self.label_noise_ratio > 0:
            flip = torch.rand(shape, device=labels.device) < self.label_noise_ratio * 0.5
            labels[flip] = torch.randint_like(labels[flip], 0, self.num_classes)
        if self.box_noise_scale > 0:
            half_wh = boxes[..., 2:].repeat(1, 1, 1, 1, 2) / 2
            negative = torch.arange(2, device=boxes.device).view(1, 1, 2, 1, 1).to(boxes)
            sign = torch.randint_like(boxes, 0, 2) * 2.0 - 1.0
            magnitude = torch.rand_like(boxes) + negative
            corners = box_cxcywh_to_xyxy(boxes) + sign * magnitude * half_wh * self.box_noise_scale
            boxes = box_xyxy_to_cxcywh(corners.clamp(0.0, 1.0))
        keep = valid[:, None, None].expand(shape)
        content = label_enc(labels) * keep[..., None]
        box_unact = inverse_sigmoid(boxes) * keep[..., None]
        d = meta.num_queries
        return DenoisingQueries(
            content.reshape(n, d, -1),
            box_unact.reshape(n, d, 4),
            self.attention_mask(meta, num_matching, labels.device),
            meta,
        )

    def matched_indices(self, targets: List[Dict[str, torch.Tensor]], meta: DenoisingMeta):
        """Per image (query indices, target indices) of the positive queries, group-major."""
        out = []
        for t in targets:  # index bookkeeping only (the cost-free "matching" of denoising)
            n_t = len(t["labels"])
            obj = torch.arange(n_t, device=t["labels"].device)
            groups = torch.arange(meta.num_groups, device=obj.device)[:, None] * meta.group_size
            out.append(((groups + obj).flatten(), obj.repeat(meta.num_groups)))
        return out

    def extra_repr(self) -> str:
        return (
            f"num_dn_queries={self.num_dn_queries}, label_noise_ratio="
            f"{self.label_noise_ratio}, box_noise_scale={self.box_noise_scale}"
        )
