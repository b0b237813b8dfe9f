"""Independent float64 reference of multi-scale deformable attention, for the MSDA tests.

Written from the definition (not from the code under test, no grid_sample): for each level and
each of the four bilinear corners, gather the corner's value rows with `torch.gather`, weight them
by (1 - |x - x_corner|) (1 - |y - y_corner|) (zero when the corner lies outside the level) and by
the attention weight, and sum. Pixel coordinates: x = loc_x * W - 0.5 (align_corners=False).
Differentiable by autograd (the gradient of the bilinear weight is the exact piecewise one).
"""

import torch


def reference_ms_deform_attn(value, spatial_shapes, sampling_locations, attention_weights):
    """value (N, S, M, D), spatial_shapes list of (H, W) (levels back to back from token 0),
    sampling_locations (N, Q, M, L, P, 2), attention_weights (N, Q, M, L, P) -> (N, Q, M*D)."""
    value = value.double()
    sampling_locations = sampling_locations.double()
    attention_weights = attention_weights.double()
    n, _, m, d = value.shape
    q, points = sampling_locations.shape[1], sampling_locations.shape[4]
    out = value.new_zeros(n, q, m, d)
    start = 0
    for lvl, (h, w) in enumerate(spatial_shapes):
        per_head = value[:, start : start + h * w].permute(0, 2, 1, 3)  # (N, M, HW, D)
        x = sampling_locations[:, :, :, lvl, :, 0] * w - 0.5  # (N, Q, M, P)
        y = sampling_locations[:, :, :, lvl, :, 1] * h - 0.5
        x0, y0 = x.detach().floor(), y.detach().floor()
        for dy in (0, 1):
            for dx in (0, 1):
                xc, yc = x0 + dx, y0 + dy
                inside = (xc >= 0) & (xc < w) & (yc >= 0) & (yc < h)
                coef = (1 - (x - xc).abs()) * (1 - (y - yc).abs()) * inside
                token = (yc.clamp(0, h - 1) * w + xc.clamp(0, w - 1)).long()
                index = token.permute(0, 2, 1, 3).reshape(n, m, q * points, 1).expand(-1, -1, -1, d)
                rows = per_head.gather(2, index).view(n, m, q, points, d).permute(0, 2, 1, 3, 4)
                out = out + ((coef * attention_weights[:, :, :, lvl])[..., None] * rows).sum(3)
        start += h * w
    return out.reshape(n, q, m * d)


def random_inputs(
    n,
    q,
    heads,
    head_dim,
    spatial_shapes,
    points,
    dtype=torch.float64,
    device="cpu",
    low=-0.3,
    high=1.3,
    seed=0,
    pad_tokens=0,
):
    """Random (value, sampling_locations, attention_weights), locations in [low, high] so some
    fall outside [0, 1]; the last `pad_tokens` tokens of every batch item after the first are
    zeroed, as a key padding mask does."""
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in spatial_shapes)
    levels = len(spatial_shapes)
    value = torch.randn(n, s, heads, head_dim, generator=g, dtype=torch.float64)
    if pad_tokens:
        value[1:, s - pad_tokens :] = 0
    loc = low + (high - low) * torch.rand(
        n, q, heads, levels, points, 2, generator=g, dtype=torch.float64
    )
    weights = torch.rand(n, q, heads, levels, points, generator=g, dtype=torch.float64)
    return tuple(t.to(device, dtype) for t in (value, loc, weights))


def level_start_index(spatial_shapes):
    starts, acc = [], 0
    for h, w in spatial_shapes:
        starts.append(acc)
        acc += h * w
    return torch.tensor(starts, dtype=torch.long)
