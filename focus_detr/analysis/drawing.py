"""Drawing token selections on images (numpy + PIL): token cells, token dots, labelled panel
grids written as PNG.

A panel is an (H, W, 3) uint8 image with a title; a grid of panels gets a title strip of
`TITLE_HEIGHT` pixels above every panel and above the whole figure, so a grid of R rows and C
columns of H x W panels is C*W wide and TITLE_HEIGHT + R*(TITLE_HEIGHT + H) high (`grid_size`).
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "AGREEMENT_COLORS",
    "LEVEL_COLORS",
    "TITLE_HEIGHT",
    "Panel",
    "dim",
    "draw_boxes",
    "draw_token_dots",
    "grid_size",
    "level_masks",
    "overlay_cells",
    "save_grid",
    "to_hwc_uint8",
]

TITLE_HEIGHT = 16
# one colour per feature level (finest first), and for agreement with ground truth
LEVEL_COLORS = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
)
AGREEMENT_COLORS = {
    "kept foreground": (0, 200, 0),
    "kept background": (230, 0, 0),
    "missed foreground": (0, 110, 255),
}

Panel = Tuple[np.ndarray, str]


def to_hwc_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) tensor (uint8 or float 0..255, RGB) -> (H, W, 3) uint8 array."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    return image.detach().cpu().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy().copy()


def dim(image: np.ndarray, factor: float = 0.5) -> np.ndarray:
    """Darkened copy (tokens drawn on top stand out)."""
    return (image.astype(np.float32) * factor).astype(np.uint8)


def level_masks(mask: torch.Tensor, spatial_shapes: torch.Tensor) -> List[np.ndarray]:
    """Split an (S,) bool token mask into per-level (H_l, W_l) bool arrays."""
    out, start = [], 0
    for h, w in spatial_shapes.tolist():
        out.append(mask[start : start + h * w].reshape(h, w).cpu().numpy())
        start += h * w
    if start != mask.numel():
        raise ValueError(f"mask of {mask.numel()} tokens for levels of {start} tokens")
    return out


def _cells(mask: np.ndarray, stride: int, height: int, width: int) -> np.ndarray:
    """(H_l, W_l) token mask -> (height, width) pixel mask of the tokens' stride x stride cells
    (token (i, j) covers rows s*i..s*(i+1), columns s*j..s*(j+1) of the padded input)."""
    big = np.kron(mask.astype(np.uint8), np.ones((stride, stride), np.uint8)).astype(bool)
    out = np.zeros((height, width), bool)
    h, w = min(height, big.shape[0]), min(width, big.shape[1])
    out[:h, :w] = big[:h, :w]
    return out


def overlay_cells(
    image: np.ndarray, mask: np.ndarray, stride: int, color: Sequence[int], alpha: float = 0.6
) -> np.ndarray:
    """Blend `color` over the cells of the tokens in `mask` (H_l, W_l) of a level of `stride`."""
    out = image.copy()
    pixels = _cells(mask, stride, image.shape[0], image.shape[1])
    blended = (1 - alpha) * out[pixels].astype(np.float32) + alpha * np.asarray(color, np.float32)
    out[pixels] = blended.astype(np.uint8)
    return out


def draw_token_dots(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    strides: Sequence[int],
    colors: Sequence[Sequence[int]] = LEVEL_COLORS,
) -> np.ndarray:
    """A dot at the centre (s*j + s//2, s*i + s//2) of every token in the per-level `masks`,
    radius stride/4 (at least 1 pixel), coarse levels first so that fine ones stay visible."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    for level in reversed(range(len(masks))):
        s = int(strides[level])
        r = max(1.0, s / 4.0)
        color = tuple(int(c) for c in colors[level % len(colors)])
        for i, j in zip(*np.nonzero(masks[level])):
            x, y = s * j + s // 2, s * i + s // 2
            draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
    return np.asarray(pil).copy()


def draw_boxes(
    image: np.ndarray, boxes_xyxy: torch.Tensor, color=(255, 255, 255), width: int = 2
) -> np.ndarray:
    """Rectangles of (M, 4) xyxy pixel boxes."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    for x0, y0, x1, y1 in boxes_xyxy.reshape(-1, 4).tolist():
        draw.rectangle([x0, y0, x1, y1], outline=tuple(color), width=width)
    return np.asarray(pil).copy()


def grid_size(rows: int, cols: int, height: int, width: int) -> Tuple[int, int]:
    """(width, height) in pixels of a grid of rows x cols panels of height x width."""
    return cols * width, TITLE_HEIGHT + rows * (TITLE_HEIGHT + height)


def _font():
    return ImageFont.load_default()


def save_grid(
    path: str, rows: Sequence[Sequence[Optional[Panel]]], title: str = ""
) -> Tuple[int, int]:
    """Write a PNG of panels arranged in rows (a None cell stays black); every panel must have
    the size of the first. Returns the (width, height) written."""
    first = next((p for row in rows for p in row if p is not None), None)
    if first is None:
        raise ValueError("no panels to draw")
    h, w = first[0].shape[:2]
    cols = max(len(r) for r in rows)
    size = grid_size(len(rows), cols, h, w)
    canvas = Image.new("RGB", size, (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    draw.text((2, 2), title, fill=(255, 255, 255), font=font)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            if panel is None:
                continue
            image, caption = panel
            if image.shape[:2] != (h, w):
                raise ValueError(f"panel ({r}, {c}) is {image.shape[:2]}, expected {(h, w)}")
            top = TITLE_HEIGHT + r * (TITLE_HEIGHT + h)
            strip = Image.new("RGB", (w, TITLE_HEIGHT), (32, 32, 32))
            ImageDraw.Draw(strip).text((2, 2), caption, fill=(255, 255, 255), font=font)
            canvas.paste(strip, (c * w, top))
            canvas.paste(Image.fromarray(image), (c * w, top + TITLE_HEIGHT))
    canvas.save(path)
    return size
