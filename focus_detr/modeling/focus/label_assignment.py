"""Foreground labels of multi-scale tokens from ground-truth boxes (paper Eq. 1, FCOS-like).

Token (i, j) of a level with stride s sits at (x, y) = (s*j + s//2, s*i + s//2) in the padded
input image. It is foreground when that point lies strictly inside a ground-truth box whose size
measure d falls in the level's range (lo, hi]:
- "max_side_distance" (published code): d = the largest distance from the point to the box's
  four sides;
- "half_size" (the paper's text): d = max(w, h) / 2 of the box.
The published ranges, (-1, 64], (64, 128], (128, 256], (256, inf), do not overlap; the paper's
50%-overlap ranges come from :func:`overlapping_scale_ranges`. They are set for images of an
800-px short side; on much smaller images the coarse levels would get no foreground, so
`range_scale` multiplies every bound (the tiny configs scale them to their image size).
"""

from typing import List, Sequence, Tuple

import torch
from torch.nn.utils.rnn import pad_sequence

from ...layers.graph_capture import level_shapes
from ..transformer.multiscale import FOUR_SCALE_STRIDES

__all__ = [
    "ForegroundLabelAssigner",
    "overlapping_scale_ranges",
    "pad_boxes",
    "PUBLISHED_SCALE_RANGES",
    "SIZE_MEASURES",
]

PUBLISHED_SCALE_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, float("inf")))
SIZE_MEASURES = ("max_side_distance", "half_size")


def overlapping_scale_ranges(
    upper_bounds: Sequence[float] = (64.0, 128.0, 256.0, float("inf")),
    first_lower_bound: float = 0.0,
) -> Tuple[Tuple[float, float], ...]:
    """The paper's ranges: adjacent levels overlap by half of the finer one,
    r_b^{l+1} = (r_b^l + r_e^l) / 2, r_b^0 = `first_lower_bound`.

    With the default upper bounds: (0, 64], (32, 128], (80, 256], (168, inf).
    """
    ranges, lower = [], float(first_lower_bound)
    for upper in upper_bounds:
        ranges.append((lower, float(upper)))
        lower = (lower + float(upper)) / 2.0
    return tuple(ranges)


def pad_boxes(boxes: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-image (M_i, 4) boxes -> padded (N, max M_i, 4) and validity (N, max M_i) bool."""
    if len(boxes) == 0:
        raise ValueError("pad_boxes needs at least one image's boxes")
    padded = pad_sequence([b.reshape(-1, 4).float() for b in boxes], batch_first=True)
    lengths = torch.tensor([b.shape[0] for b in boxes], device=padded.device)
    valid = torch.arange(padded.shape[1], device=padded.device)[None] < lengths[:, None]
    return padded, valid


def _grid_centers(h: int, w: int, stride: int, device=None) -> torch.Tensor:
    """(h*w, 2) pixel (x, y) of a level's tokens in row-major order."""
    ys = torch.arange(h, device=device, dtype=torch.float32) * stride + stride // 2
    xs = torch.arange(w, device=device, dtype=torch.float32) * stride + stride // 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], -1)


class ForegroundLabelAssigner:
    """Binary foreground label of every token, batched over images and boxes.

    Args:
        strides: feature stride of each level, finest first. Default (8, 16, 32, 64).
        scale_ranges: (lo, hi] of the size measure per level. Default: the published ranges.
        size_measure: "max_side_distance" (published) or "half_size" (paper's text).
        range_scale: factor applied to every positive bound of `scale_ranges` (a lower bound
            <= 0, "any size", stays), for images much smaller or larger than the 800-px short
            side the published ranges were set for. Default 1 (the ranges as given).
    """

    def __init__(
        self,
        strides: Sequence[int] = FOUR_SCALE_STRIDES,
        scale_ranges: Sequence[Tuple[float, float]] = PUBLISHED_SCALE_RANGES,
        size_measure: str = "max_side_distance",
        range_scale: float = 1.0,
    ):
        if not (isinstance(range_scale, (int, float)) and 0 < range_scale < float("inf")):
            raise ValueError(f"range_scale must be a positive finite number, got {range_scale!r}")
        if len(strides) != len(scale_ranges):
            raise ValueError(f"{len(strides)} strides but {len(scale_ranges)} scale ranges")
        if size_measure not in SIZE_MEASURES:
            raise ValueError(f"size_measure must be one of {SIZE_MEASURES}, got {size_measure!r}")
        self.strides = tuple(int(s) for s in strides)

        def scaled(bound):
            return float(bound) * range_scale if float(bound) > 0 else float(bound)

        self.scale_ranges = tuple((scaled(lo), scaled(hi)) for lo, hi in scale_ranges)
        self.range_scale = float(range_scale)
        self.size_measure = size_measure

    def token_centers(self, spatial_shapes: Sequence[Tuple[int, int]], device=None) -> torch.Tensor:
        """(S, 2) pixel (x, y) of every token, levels concatenated finest first."""
        return torch.cat(
            [_grid_centers(h, w, s, device) for (h, w), s in zip(spatial_shapes, self.strides)], 0
        )

    def __call__(
        self,
        boxes: torch.Tensor,
        box_valid: torch.Tensor,
        spatial_shapes,
        padding_mask: torch.Tensor = None,
    ) -> torch.Tensor:
        """Labels of all tokens.

        Args:
            boxes: (N, M, 4) ground-truth boxes, absolute (x0, y0, x1, y1) pixels of the padded
                input (see :func:`pad_boxes`).
            box_valid: (N, M) bool, False at padding boxes.
            spatial_shapes: (L, 2) (H, W) per level, finest first (tensor or sequence).
            padding_mask: (N, S) bool, True at padded tokens (never foreground); None = no padding.
        Returns:
            (N, S) bool foreground labels.
        """
        shapes = level_shapes(spatial_shapes)
        if len(shapes) != len(self.strides):
            raise ValueError(f"assigner has {len(self.strides)} levels, got {len(shapes)} shapes")
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be (N, M, 4), got {tuple(boxes.shape)}")
        boxes = boxes.float()
        labels = []
        x0, y0, x1, y1 = (boxes[..., i][:, None, :] for i in range(4))  # (N, 1, M)
        for level, ((h, w), s) in enumerate(zip(shapes, self.strides)):
            centers = _grid_centers(h, w, s, boxes.device)
            x, y = centers[None, :, 0, None], centers[None, :, 1, None]  # (1, T, 1)
            sides = torch.stack([x - x0, y - y0, x1 - x, y1 - y], -1)  # (N, T, M, 4)
            inside = sides.min(-1).values > 0
            if self.size_measure == "max_side_distance":
                size = sides.max(-1).values
            else:
                size = (torch.maximum(x1 - x0, y1 - y0) / 2.0).expand_as(inside)
            lo, hi = self.scale_ranges[level]
            positive = inside & (size > lo) & (size <= hi) & box_valid[:, None, :]
            labels.append(positive.any(-1))
        labels = torch.cat(labels, 1)
        if padding_mask is not None:
            labels = labels & ~padding_mask
        return labels
