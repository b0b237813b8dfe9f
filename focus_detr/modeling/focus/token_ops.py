"""Batched operations on flattened multi-scale token maps (no loop over images).

Token maps are batch-first (N, S, ...) with levels concatenated finest first; a padded image's
valid tokens form the top-left rectangle of every level (detectron2's `ImageList` pads bottom and
right). Per-image variable-length subsets are held as padded index lists (N, K) plus a validity
mask (N, K).
"""

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from ..transformer.multiscale import valid_sizes

__all__ = ["gather_tokens", "scatter_tokens", "level_valid_sizes", "resize_valid_region"]


def _flat_rows(index: torch.Tensor, rows_per_image: int) -> torch.Tensor:
    """(N, K) per-image row indices -> (N*K,) rows of the flattened (N * rows_per_image, ...)
    map."""
    offsets = torch.arange(index.shape[0], device=index.device)[:, None] * rows_per_image
    return (index + offsets).reshape(-1)


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens (N, S, *rest), index (N, K) int64 -> (N, K, *rest), out[n, k] = tokens[n, index[n, k]]."""
    if index.dim() != 2 or index.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"index must be (N, K) with N = {tokens.shape[0]}, got {tuple(index.shape)}"
        )
    n, s = tokens.shape[:2]
    rest = tokens.shape[2:]
    # whole rows (index_select), several times faster than an element-wise torch.gather
    rows = tokens.reshape(n * s, *rest).index_select(0, _flat_rows(index, s))
    return rows.view(*index.shape, *rest)


def scatter_tokens(
    tokens: torch.Tensor, index: torch.Tensor, values: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Out-of-place `tokens[n, index[n, k]] = values[n, k]` for every slot with `valid[n, k]`.

    Invalid slots write nothing, whatever their index (they are redirected to a scratch row that
    is dropped), so padded index lists need no clean-up. Valid indices must be distinct per image.

    Args:
        tokens: (N, S, *rest).
        index: (N, K) int64.
        values: (N, K, *rest).
        valid: (N, K) bool.
    Returns:
        (N, S, *rest).
    """
    n, s = tokens.shape[:2]
    rest = tokens.shape[2:]
    out = torch.cat([tokens, tokens.new_zeros((n, 1, *rest))], dim=1)  # + a scratch row
    target = torch.where(valid, index, torch.full_like(index, s))
    rows, flat = _flat_rows(target, s + 1), values.reshape(n * index.shape[1], *rest)
    # whole rows (index_copy), faster than an element-wise scatter; in place except in an ONNX
    # export, whose tracer does not carry an in-place write through the view
    if torch.onnx.is_in_onnx_export():
        out = out.view(n * (s + 1), *rest).index_copy(0, rows, flat).view(n, s + 1, *rest)
    else:
        out.view(n * (s + 1), *rest).index_copy_(0, rows, flat)
    return out[:, :s]


def level_valid_sizes(
    padding_mask: torch.Tensor,
    spatial_shapes: Sequence[Tuple[int, int]],
    level_start_index: Sequence[int],
) -> torch.Tensor:
    """Valid (height, width) of every level of every image: (N, L, 2) int64.

    The transformer's count (`multiscale.valid_sizes`) on the flattened map's levels, in
    (height, width) order.

    Args:
        padding_mask: (N, S) bool, True at padded tokens.
        spatial_shapes: L x (H_l, W_l); level_start_index: L offsets into S.
    """
    masks = [
        padding_mask[:, start : start + h * w].view(-1, h, w)
        for (h, w), start in zip(spatial_shapes, level_start_index)
    ]
    return valid_sizes(masks).flip(-1).long()


def resize_valid_region(
    maps: torch.Tensor, src_valid: torch.Tensor, dst_shape: Tuple[int, int], dst_valid: torch.Tensor
) -> torch.Tensor:
    """Bilinear resize (align_corners=True) of each image's valid region onto its valid region
    at another resolution.

    For an unpadded image this is exactly `F.interpolate(..., mode="bilinear", align_corners=True)`
    of the whole map; with padding, each image is resized as if it were alone, so padded values
    never reach valid outputs. Output positions outside `dst_valid` hold border-clamped values.

    Args:
        maps: (N, H, W) source maps.
        src_valid: (N, 2) int64 valid (h, w) of the source, or None: all of it.
        dst_shape: (H', W') output size.
        dst_valid: (N, 2) int64 valid (h', w') of the output, or None: all of it.
    Returns:
        (N, H', W').
    """
    n, src_h, src_w = maps.shape
    dst_h, dst_w = dst_shape
    full_src = src_valid is None or bool(
        (src_valid[:, 0] == src_h).all() and (src_valid[:, 1] == src_w).all()
    )
    full_dst = dst_valid is None or bool(
        (dst_valid[:, 0] == dst_h).all() and (dst_valid[:, 1] == dst_w).all()
    )
    if full_src and full_dst:
        return F.interpolate(
            maps[:, None], size=(dst_h, dst_w), mode="bilinear", align_corners=True
        )[:, 0]

    def normalized_source_coords(src_len, src_v, dst_len, dst_v):
        # align_corners=True: output i samples input i * (in - 1) / (out - 1); a 1-long output
        # samples input 0 (PyTorch's convention).
        scale = (src_v - 1).to(maps.dtype) / (dst_v - 1).clamp(min=1).to(maps.dtype)
        scale = torch.where(dst_v > 1, scale, torch.zeros_like(scale))
        pos = torch.arange(dst_len, device=maps.device, dtype=maps.dtype)[None] * scale[:, None]
        return pos * (2.0 / max(src_len - 1, 1)) - 1.0  # (N, dst_len) in grid_sample's [-1, 1]

    gy = normalized_source_coords(src_h, src_valid[:, 0], dst_h, dst_valid[:, 0])
    gx = normalized_source_coords(src_w, src_valid[:, 1], dst_w, dst_valid[:, 1])
    grid = torch.stack(
        [gx[:, None, :].expand(n, dst_h, dst_w), gy[:, :, None].expand(n, dst_h, dst_w)], -1
    )
    return F.grid_sample(
        maps[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True
    )[:, 0]
