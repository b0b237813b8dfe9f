"""Pure-PyTorch multi-scale deformable attention (bilinear, zero padding, align_corners=False).

Runs on any device and dtype and is differentiable by autograd. Per level it samples with
`F.grid_sample`, whose output is (N*heads, head_dim, Q, points): the largest intermediate is the
stacked samples of all levels, output size x levels x points.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: Sequence[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """See :func:`focus_detr.layers.ms_deform_attn` for shapes; `spatial_shapes` as (H, W) ints."""
    n, _, heads, head_dim = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    # grid_sample wants [-1, 1] coordinates, (N*heads, Q, points, 2) grids per level
    grids = (2 * sampling_locations - 1).transpose(1, 2).flatten(0, 1)
    samples = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        v = per_level[lvl].permute(0, 2, 3, 1).reshape(n * heads, head_dim, h, w)
        samples.append(F.grid_sample(v, grids[:, :, lvl], mode="bilinear",
                                     padding_mode="zeros", align_corners=False))
    # (N*heads, head_dim, Q, levels*points) x (N*heads, 1, Q, levels*points)
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, q, levels * points)
    out = (torch.cat(samples, dim=-1) * weights).sum(-1)
    return out.view(n, heads * head_dim, q).transpose(1, 2).contiguous()
