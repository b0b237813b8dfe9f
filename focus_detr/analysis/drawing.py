"""Drawing token selections on images (numpy + PIL): token cells, token dots, labelled panel
grids written as PNG.

A panel is an (H, W, 3) uint8 image with a caption. `save_grid` enlarges small panels by a
whole factor (nearest neighbour: token cells stay sharp) until they are at least `MIN_PANEL`
pixels wide, wraps the figure title and every caption to the width they have, and adds one colour
legend per figure, so a grid of C columns of H x W panels is C * W * panel_scale(H, W) wide.
Every colour has one meaning in a figure: feature levels (`LEVEL_COLORS`), agreement with the
ground truth (`AGREEMENT_COLORS`) and the ground truth itself (`GROUND_TRUTH_COLOR`) do not share
colours.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "AGREEMENT_COLORS",
    "GROUND_TRUTH_COLOR",
    "LEVEL_COLORS",
    "MIN_PANEL",
    "Panel",
    "dim",
    "draw_boxes",
    "draw_token_dots",
    "level_legend",
    "level_masks",
    "overlay_cells",
    "panel_scale",
    "save_grid",
    "to_hwc_uint8",
]

MIN_PANEL = 384  # least panel width in pixels in the written figures
FONT_SIZE = 14
LINE_HEIGHT = 18
DIM_FACTOR = 0.7  # background brightness under the drawn tokens
# one colour per feature level (finest first): none of them is an agreement colour below
LEVEL_COLORS = (
    (70, 240, 240),  # cyan
    (240, 50, 230),  # magenta
    (255, 225, 25),  # yellow
    (245, 130, 48),  # orange
    (170, 110, 40),  # brown
    (250, 190, 212),  # pink
)
AGREEMENT_COLORS = {
    "kept foreground": (0, 200, 0),
    "kept background": (230, 0, 0),
    "missed foreground": (0, 110, 255),
}
GROUND_TRUTH_COLOR = (255, 255, 255)

Panel = Tuple[np.ndarray, str]


def to_hwc_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) tensor (uint8 or float 0..255, RGB) -> (H, W, 3) uint8 array."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    return image.detach().cpu().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy().copy()


def dim(image: np.ndarray, factor: float = DIM_FACTOR) -> np.ndarray:
    """Darkened copy (tokens drawn on top stand out; the image stays readable)."""
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


def panel_scale(height: int, width: int, min_width: int = MIN_PANEL) -> int:
    """The whole factor that makes a height x width panel at least `min_width` wide."""
    return max(1, -(-min_width // max(1, width)))


def level_legend(num_levels: int, strides: Sequence[int] = ()) -> List[Tuple[Sequence[int], str]]:
    """Legend entries (colour, text) of the feature levels."""
    return [
        (
            LEVEL_COLORS[l % len(LEVEL_COLORS)],
            f"level {l}" + (f" (stride {int(strides[l])})" if l < len(strides) else ""),
        )
        for l in range(num_levels)
    ]


def _font():
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(text: str, font, width: int) -> List[str]:
    """`text` broken at spaces into lines no wider than `width` pixels (a longer word alone)."""
    lines: List[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _legend_lines(legend, font, width: int):
    """Rows of legend entries that fit `width`: [[(colour, text, x), ...], ...]."""
    rows, row, x = [], [], 4
    for color, text in legend:
        w = LINE_HEIGHT + 4 + font.getlength(text) + 16
        if row and x + w > width:
            rows.append(row)
            row, x = [], 4
        row.append((color, text, x))
        x += w
    if row:
        rows.append(row)
    return rows


def save_grid(
    path: str,
    rows: Sequence[Sequence[Optional[Panel]]],
    title: str = "",
    legend: Sequence[Tuple[Sequence[int], str]] = (),
    min_width: int = MIN_PANEL,
) -> Tuple[int, int]:
    """Write a PNG of panels arranged in rows (a None cell stays black) under the wrapped
    `title`, each with its wrapped caption, and one `legend` ((colour, text) pairs) at the
    bottom; every panel must have the size of the first, enlarged to `panel_scale`. Returns the
    (width, height) written."""
    first = next((p for row in rows for p in row if p is not None), None)
    if first is None:
        raise ValueError("no panels to draw")
    h, w = first[0].shape[:2]
    scale = panel_scale(h, w, min_width)
    ph, pw = h * scale, w * scale
    cols = max(len(r) for r in rows)
    width = cols * pw
    font = _font()
    title_lines = _wrap(title, font, width - 8) if title else []
    captions = [[_wrap(p[1], font, pw - 8) if p is not None else [] for p in row] for row in rows]
    caption_heights = [max([len(c) for c in row] + [1]) * LINE_HEIGHT + 4 for row in captions]
    legend_rows = _legend_lines(legend, font, width)
    height = (
        len(title_lines) * LINE_HEIGHT
        + 4
        + sum(caption_heights)
        + len(rows) * ph
        + len(legend_rows) * LINE_HEIGHT
        + (6 if legend_rows else 0)
    )
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    y = 2
    for line in title_lines:
        draw.text((4, y), line, fill=(255, 255, 255), font=font)
        y += LINE_HEIGHT
    y += 2
    for r, row in enumerate(rows):
        draw.rectangle([0, y, width, y + caption_heights[r] - 1], fill=(40, 40, 40))
        for c, panel in enumerate(row):
            if panel is None:
                continue
            image = panel[0]
            if image.shape[:2] != (h, w):
                raise ValueError(f"panel ({r}, {c}) is {image.shape[:2]}, expected {(h, w)}")
            for i, line in enumerate(captions[r][c]):
                draw.text(
                    (c * pw + 4, y + 2 + i * LINE_HEIGHT), line, fill=(255, 255, 255), font=font
                )
            big = np.kron(image, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else image
            canvas.paste(Image.fromarray(big), (c * pw, y + caption_heights[r]))
        y += caption_heights[r] + ph
    y += 4
    for legend_row in legend_rows:
        for color, text, x in legend_row:
            draw.rectangle(
                [x, y + 2, x + LINE_HEIGHT - 4, y + LINE_HEIGHT - 2],
                fill=tuple(int(v) for v in color),
                outline=(128, 128, 128),
            )
            draw.text((x + LINE_HEIGHT, y + 1), text, fill=(255, 255, 255), font=font)
        y += LINE_HEIGHT
    canvas.save(path)
    return canvas.size
