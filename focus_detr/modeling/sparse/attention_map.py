"""Sparse DETR's decoder cross-attention map (DAM) and the token targets derived from it.

Each decoder sampling point holds an attention weight and a location between four token centres
of its level; it hands the weight to those four tokens with bilinear weights, exactly the tokens
(and weights) that the deformable attention read its value from. Summed over decoder layers,
queries, heads, levels and points this gives one importance value per token of the flattened
multi-scale map: the DAM. The top `keep count` valid tokens of each image are the targets of the
token score network.

Coordinates follow the sampling convention of the deformable attention (`grid_sample`,
align_corners=False): a normalized location x in [0, 1] of a level of width W is the pixel
coordinate x * W - 0.5 of that level's token grid, whose token centres sit at integers
0 .. W - 1. Corners outside the grid receive nothing (the attention reads zeros there).
The published Sparse DETR uses x * W (no -0.5), half a token off its own sampling;
`pixel_offset=0.0` reproduces that.
"""

import numpy as np
import torch

from ..focus.token_ops import scatter_tokens

__all__ = [
    "decoder_attention_map",
    "graph_sparse_keep_count",
    "top_count_targets",
    "sparse_keep_counts",
    "static_sparse_keep_count",
]


def decoder_attention_map(
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    pixel_offset: float = 0.5,
) -> torch.Tensor:
    """Splat attention weights bilinearly onto the flattened token grid.

    Args:
        sampling_locations: (layers, N, Q, heads, L, P, 2) normalized (x, y) in each level's
            padded frame (the decoder's cross attention).
        attention_weights: (layers, N, Q, heads, L, P).
        spatial_shapes: (L, 2) int64 (H, W); level_start_index: (L,) int64.
        pixel_offset: subtracted from x * W (and y * H) to get the token-grid coordinate; 0.5
            matches the attention's align_corners=False sampling (default), 0.0 the published
            Sparse DETR code.

    Returns:
        (N, S) attention mass of every token, summed over layers, queries, heads, levels and
        points. Detached (a target, not a prediction).
    """
    if sampling_locations.dim() != 7 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "sampling_locations must be (layers, N, Q, heads, L, P, 2), got "
            f"{tuple(sampling_locations.shape)}"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"attention_weights {tuple(attention_weights.shape)} do not match "
            f"sampling_locations {tuple(sampling_locations.shape)}"
        )
    num_levels = sampling_locations.shape[4]
    if spatial_shapes.shape != (num_levels, 2):
        raise ValueError(
            f"spatial_shapes must be ({num_levels}, 2), got {tuple(spatial_shapes.shape)}"
        )
    n = sampling_locations.shape[1]
    total = int(spatial_shapes.prod(1).sum())
    # batch first, every (layer, query, head) as one row of samples: (N, M, L, P, ...)
    loc = sampling_locations.detach().transpose(0, 1).flatten(1, 3)
    weights = attention_weights.detach().transpose(0, 1).flatten(1, 3)
    shapes = spatial_shapes.to(loc.device)
    height = shapes[:, 0].view(-1, 1)  # (L, 1) broadcasts against (..., L, P)
    width = shapes[:, 1].view(-1, 1)
    start = level_start_index.to(loc.device).view(-1, 1)
    pixel = (
        loc * torch.stack([shapes[:, 1], shapes[:, 0]], -1).to(loc.dtype)[:, None] - pixel_offset
    )
    corner = pixel.floor()
    frac = pixel - corner
    corner = corner.long()
    dam = weights.new_zeros(n, total)
    for dx in (0, 1):
        for dy in (0, 1):
            x = corner[..., 0] + dx
            y = corner[..., 1] + dy
            bilinear = (frac[..., 0] if dx else 1 - frac[..., 0]) * (
                frac[..., 1] if dy else 1 - frac[..., 1]
            )
            inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            index = torch.where(inside, start + y * width + x, torch.zeros_like(x))
            mass = torch.where(inside, weights * bilinear, torch.zeros_like(bilinear))
            dam.scatter_add_(1, index.flatten(1), mass.flatten(1))
    return dam


def sparse_keep_counts(padding_mask: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Tokens kept per image: int(valid * keep_ratio) + 1 (the published count, float32
    arithmetic), at most the image's valid tokens. padding_mask (N, S) -> (N,) int64."""
    valid = (~padding_mask).sum(1)
    count = (valid.to(torch.float32) * keep_ratio).to(torch.int64) + 1
    return torch.minimum(count, valid)


def static_sparse_keep_count(num_tokens: int, keep_ratio: float) -> int:
    """`sparse_keep_counts` of an unpadded image of `num_tokens` tokens as a Python int (the
    same float32 arithmetic), for graph capture, where counts cannot be read from tensors."""
    return min(int(np.float32(num_tokens) * np.float32(keep_ratio)) + 1, num_tokens)


def graph_sparse_keep_count(num_tokens: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """`static_sparse_keep_count` for a token count that is a graph value (a dynamic-shape
    export): a 0-dim int64 tensor, the same float32 arithmetic recorded in the graph."""
    num_tokens = torch.as_tensor(num_tokens, dtype=torch.int64)
    count = (num_tokens.to(torch.float32) * keep_ratio).to(torch.int64) + 1
    return torch.minimum(count, num_tokens)


def top_count_targets(
    scores: torch.Tensor, padding_mask: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """Binary targets: the `counts[n]` highest-scored VALID tokens of image n are 1.

    Args:
        scores: (N, S) e.g. the decoder attention map.
        padding_mask: (N, S) bool, True at padded tokens (never a target).
        counts: (N,) int64, at most each image's valid tokens.

    Returns:
        (N, S) float targets in {0, 1}.
    """
    valid_tokens = (~padding_mask).sum(1)
    if bool((counts > valid_tokens).any()):
        raise ValueError(
            f"target counts {counts.tolist()} exceed the valid tokens {valid_tokens.tolist()}"
        )
    k = int(counts.max()) if counts.numel() else 0
    index = scores.detach().masked_fill(padding_mask, float("-inf")).topk(k, dim=1).indices
    slot_valid = torch.arange(k, device=scores.device)[None] < counts[:, None]
    zeros = scores.new_zeros(scores.shape).detach()
    return scatter_tokens(zeros, index, torch.ones_like(index, dtype=zeros.dtype), slot_valid)
