"""Pure-PyTorch multi-scale deformable attention (bilinear, zero padding, align_corners=False).

Runs on any device and floating dtype (float64, float32, float16, bfloat16). For each level and
head, `F.grid_sample` reads the level's values through a strided (N, head_dim, H, W) view of
`value` (no copy), samples every (query, point) and the samples are weighted and summed into the
output at once. Largest intermediates: the samples of one (level, head), i.e. output x points /
heads, and, in backward, the gradient of one (level, head) slice of value. The backward
recomputes the samples instead of saving them (`aten.grid_sampler_2d_backward` gives the value
and grid gradients), so nothing of size output x levels x points is ever alive.
(One `grid_sample` over all heads would need a (N*heads, head_dim, H, W) copy of each level,
larger than the output x levels x points bound for decoder-sized queries, and was not faster.)
"""

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..graph_capture import level_shapes, level_starts

__all__ = ["ms_deform_attn_pytorch", "forward", "backward"]

_BILINEAR, _ZEROS = 0, 0  # grid_sampler_2d's enum values for mode and padding_mode


def _levels(spatial_shapes, level_start_index) -> List[Tuple[int, int, int]]:
    """(H, W, start) per level as Python ints (one host sync on CUDA)."""
    return [
        (h, w, s)
        for (h, w), s in zip(
            level_shapes(spatial_shapes), level_starts(spatial_shapes, level_start_index)
        )
    ]


def _level(value: torch.Tensor, h: int, w: int, start: int) -> torch.Tensor:
    """Level of `value` (N, S, heads, D) as a (N, H, W, heads, D) view."""
    return value[:, start : start + h * w].unflatten(1, (h, w))


def _sample(level_head: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(N, D, H, W) values at grid (N, Q, P, 2) in [-1, 1] -> (N, D, Q, P)."""
    return F.grid_sample(
        level_head, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Output (N, Q, heads*D); arguments as :func:`focus_detr.layers.ms_deform_attn`."""
    n, _, heads, d = value.shape
    q = sampling_locations.shape[1]
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1] coordinates
    out = value.new_zeros(n, q, heads, d)
    for lvl, (h, w, start) in enumerate(_levels(spatial_shapes, level_start_index)):
        level = _level(value, h, w, start)
        for head in range(heads):
            samples = _sample(level[:, :, :, head].permute(0, 3, 1, 2), grids[:, :, head, lvl])
            weights = attention_weights[:, None, :, head, lvl]  # (N, 1, Q, P)
            out[:, :, head] += (samples * weights).sum(-1).transpose(1, 2)
    return out.view(n, q, heads * d)


def backward(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output
):
    """(grad_value, grad_sampling_locations, grad_attention_weights) for `grad_output`."""
    n, _, heads, d = value.shape
    q = sampling_locations.shape[1]
    grids = 2 * sampling_locations - 1
    grad_out = grad_output.view(n, q, heads, d)
    grad_value = torch.zeros_like(value)
    grad_loc = torch.empty_like(sampling_locations)
    grad_w = torch.empty_like(attention_weights)
    for lvl, (h, w, start) in enumerate(_levels(spatial_shapes, level_start_index)):
        level, grad_level = _level(value, h, w, start), _level(grad_value, h, w, start)
        for head in range(heads):
            level_head = level[:, :, :, head].permute(0, 3, 1, 2)  # (N, D, H, W) view
            grid = grids[:, :, head, lvl]
            g = grad_out[:, :, head].transpose(1, 2).unsqueeze(-1)  # (N, D, Q, 1)
            grad_w[:, :, head, lvl] = (_sample(level_head, grid) * g).sum(1)
            grad_v, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
                g * attention_weights[:, None, :, head, lvl],
                level_head,
                grid,
                _BILINEAR,
                _ZEROS,
                False,
                [True, True],
            )
            grad_level[:, :, :, head] = grad_v.permute(0, 2, 3, 1)
            grad_loc[:, :, head, lvl] = 2 * grad_grid  # d(grid)/d(location) = 2
    return grad_value, grad_loc, grad_w


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: Sequence[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Autograd-differentiable composite version (levels stored back to back from token 0).

    Kept for callers that want plain autograd (e.g. double backward); the backend used by
    :func:`ms_deform_attn` is :func:`forward`/:func:`backward` behind one custom op.
    """
    return forward(value, spatial_shapes, None, sampling_locations, attention_weights)
