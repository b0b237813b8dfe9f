"""Pure-PyTorch multi-scale deformable attention (bilinear, zero padding, align_corners=False).

Runs on any device and floating dtype (float64, float32, float16, bfloat16). One level at a time,
`F.grid_sample` samples the level's values at every (query, point) of every head; the samples are
weighted and summed into the output at once. Largest intermediates: the samples of one level,
(N*heads, head_dim, Q, points) = output x points, and one level's values in grid_sample's
(N*heads, head_dim, H, W) layout. The backward recomputes each level's samples instead of saving
them (`aten.grid_sampler_2d_backward` gives the value and grid gradients), so nothing of size
output x levels x points is ever alive.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["ms_deform_attn_pytorch", "forward", "backward"]

_BILINEAR, _ZEROS = 0, 0  # grid_sampler_2d's enum values for mode and padding_mode


def _levels(spatial_shapes, level_start_index) -> List[Tuple[int, int, int]]:
    """(H, W, start) per level as Python ints (one host sync on CUDA)."""
    shapes = spatial_shapes.tolist() if torch.is_tensor(spatial_shapes) else spatial_shapes
    if level_start_index is None:
        starts, acc = [], 0
        for h, w in shapes:
            starts.append(acc)
            acc += int(h) * int(w)
    else:
        starts = level_start_index.tolist()
    return [(int(h), int(w), int(s)) for (h, w), s in zip(shapes, starts)]


def _level_value(value: torch.Tensor, h: int, w: int, start: int) -> torch.Tensor:
    """value[:, start:start+h*w] (N, h*w, heads, D) as grid_sample input (N*heads, D, h, w)."""
    n, _, heads, d = value.shape
    return value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(n * heads, d, h, w)


def _grids(sampling_locations: torch.Tensor) -> torch.Tensor:
    """(N, Q, heads, L, P, 2) in [0, 1] -> (N*heads, Q, L, P, 2) in grid_sample's [-1, 1]."""
    return (2 * sampling_locations - 1).transpose(1, 2).flatten(0, 1)


def forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Output (N, Q, heads*D); arguments as :func:`focus_detr.layers.ms_deform_attn`."""
    n, _, heads, d = value.shape
    q = sampling_locations.shape[1]
    grids = _grids(sampling_locations)
    weights = attention_weights.transpose(1, 2).flatten(0, 1)  # (N*heads, Q, L, P)
    out = value.new_zeros(n * heads, d, q)
    for lvl, (h, w, start) in enumerate(_levels(spatial_shapes, level_start_index)):
        samples = F.grid_sample(_level_value(value, h, w, start), grids[:, :, lvl],
                                mode="bilinear", padding_mode="zeros", align_corners=False)
        out += (samples * weights[:, None, :, lvl]).sum(-1)  # (N*heads, D, Q, P) -> (.., Q)
    return out.view(n, heads * d, q).transpose(1, 2).contiguous()


def backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
             grad_output):
    """(grad_value, grad_sampling_locations, grad_attention_weights) for `grad_output`."""
    n, _, heads, d = value.shape
    q, levels = sampling_locations.shape[1], sampling_locations.shape[3]
    grids = _grids(sampling_locations)
    weights = attention_weights.transpose(1, 2).flatten(0, 1)  # (N*heads, Q, L, P)
    # (N, Q, heads*D) -> (N*heads, D, Q, 1), broadcast over points
    grad_out = grad_output.reshape(n, q, heads, d).permute(0, 2, 3, 1).reshape(n * heads, d, q, 1)
    grad_value = torch.zeros_like(value)
    grad_grids, grad_weights = [], []
    for lvl, (h, w, start) in enumerate(_levels(spatial_shapes, level_start_index)):
        v = _level_value(value, h, w, start)
        grid = grids[:, :, lvl]
        samples = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        grad_weights.append((samples * grad_out).sum(1))  # (N*heads, Q, P)
        del samples
        grad_v, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
            grad_out * weights[:, None, :, lvl], v, grid, _BILINEAR, _ZEROS, False, [True, True])
        grad_value[:, start:start + h * w] = grad_v.view(n, heads, d, h * w).permute(0, 3, 1, 2)
        grad_grids.append(grad_grid)
    # d(grid)/d(location) = 2; back to (N, Q, heads, L, P, ...)
    grad_loc = (2 * torch.stack(grad_grids, 2)).view(n, heads, q, levels, -1, 2).transpose(1, 2)
    grad_w = torch.stack(grad_weights, 2).view(n, heads, q, levels, -1).transpose(1, 2)
    return grad_value, grad_loc.contiguous(), grad_w.contiguous()


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
