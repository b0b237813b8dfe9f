"""Flattening of multi-scale feature maps into tokens, and the per-token geometry derived from the
padding masks: valid sizes/ratios, encoder reference points and two-stage proposal boxes."""

from typing import List, Tuple

import torch

from ...layers.graph_capture import level_shapes, spatial_shapes_tensor

__all__ = [
    "FOUR_SCALE_STRIDES",
    "flatten_levels",
    "valid_sizes",
    "encoder_reference_points",
    "token_proposals",
]

# input stride of each level of DINO's 4-scale features (res3-res5 and one extra level)
FOUR_SCALE_STRIDES = (8, 16, 32, 64)


def flatten_levels(
    features: List[torch.Tensor],
    masks: List[torch.Tensor],
    pos_embeds: List[torch.Tensor],
    level_embeds: torch.Tensor,
):
    """Concatenate levels (finest first) into batch-first tokens.

    Args:
        features: L x (N, C, H_l, W_l); masks: L x (N, H_l, W_l) bool (True = padding);
        pos_embeds: L x (N, C, H_l, W_l); level_embeds: (L, C) added to each level's positions.

    Returns:
        tokens (N, S, C), pos (N, S, C), padding_mask (N, S), spatial_shapes (L, 2) int64,
        level_start_index (L,) int64.
    """
    tokens = torch.cat([f.flatten(2).transpose(1, 2) for f in features], 1)
    pos = torch.cat(
        [
            p.flatten(2).transpose(1, 2) + level_embeds[lvl].view(1, 1, -1)
            for lvl, p in enumerate(pos_embeds)
        ],
        1,
    )
    padding_mask = torch.cat([m.flatten(1) for m in masks], 1)
    spatial_shapes = spatial_shapes_tensor([f.shape[-2:] for f in features], tokens.device)
    level_start_index = torch.cat(
        (spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1])
    )
    return tokens, pos, padding_mask, spatial_shapes, level_start_index


def valid_sizes(masks: List[torch.Tensor]) -> torch.Tensor:
    """(N, L, 2) float: (valid width, valid height) of each level, counted from the masks
    (padding is at the bottom and right, so the first row/column tell). The one count of the
    package: `token_ops.level_valid_sizes` applies it to a flattened token map.

    Args:
        masks: L x (N, H_l, W_l) bool, True at padding.
    """
    return torch.stack(
        [torch.stack([(~m[:, 0, :]).sum(1), (~m[:, :, 0]).sum(1)], -1) for m in masks], 1
    ).float()


def _centres(h: int, w: int, device) -> torch.Tensor:
    """(h*w, 2) pixel-centre coordinates (x + 0.5, y + 0.5) in row-major order."""
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return torch.stack([x.reshape(-1), y.reshape(-1)], -1) + 0.5


def encoder_reference_points(
    spatial_shapes: torch.Tensor, valid_ratios: torch.Tensor
) -> torch.Tensor:
    """Each token's centre, normalized by its level's valid extent, then re-expressed in every
    level's padded frame (x valid_ratios), as Deformable DETR does.

    Args:
        spatial_shapes: (L, 2) (H, W); valid_ratios: (N, L, 2) (w, h).

    Returns:
        (N, S, L, 2).
    """
    refs = []
    for lvl, (h, w) in enumerate(level_shapes(spatial_shapes)):
        if torch.is_tensor(w):  # traced sizes of a dynamic-shape export: kept in the graph
            size = torch.stack([w, h]).to(valid_ratios)
        else:
            size = valid_ratios.new_tensor([w, h])
        extent = valid_ratios[:, lvl] * size  # (N, 2)
        refs.append(_centres(h, w, valid_ratios.device)[None] / extent[:, None])
    return torch.cat(refs, 1)[:, :, None] * valid_ratios[:, None]


def token_proposals(
    spatial_shapes: torch.Tensor,
    sizes: torch.Tensor,
    padding_mask: torch.Tensor,
    base_size: float = 0.05,
    valid_range: Tuple[float, float] = (0.01, 0.99),
):
    """Two-stage proposal box of every token, in inverse-sigmoid space.

    Token (x, y) of level l proposes the box centred on its pixel centre, normalized by the
    level's valid size, with width = height = base_size * 2**l. A proposal is valid when every
    coordinate lies strictly inside `valid_range`; invalid and padded tokens get +inf.

    Args:
        spatial_shapes: (L, 2); sizes: (N, L, 2) valid (w, h) per level; padding_mask: (N, S).

    Returns:
        proposals (N, S, 4) unsigmoided (cx, cy, w, h); invalid (N, S) bool (padded or out of
        range: the tokens that two-stage DINO zeroes before its output projection).
    """
    boxes = []
    for lvl, (h, w) in enumerate(level_shapes(spatial_shapes)):
        centre = _centres(h, w, sizes.device)[None] / sizes[:, lvl, None]  # (N, hw, 2)
        wh = torch.full_like(centre, base_size * 2.0**lvl)
        boxes.append(torch.cat([centre, wh], -1))
    boxes = torch.cat(boxes, 1)
    lo, hi = valid_range
    invalid = ~((boxes > lo) & (boxes < hi)).all(-1) | padding_mask
    proposals = torch.log(boxes / (1 - boxes)).masked_fill(invalid[..., None], float("inf"))
    return proposals, invalid
