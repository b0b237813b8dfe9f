"""Drawing primitives of the built-in synthetic dataset: shape masks, textures, backgrounds.

Everything takes an explicit `numpy.random.Generator` so that a scene is a pure function of its
seed. Images are float32 arrays (H, W, 3) with values in [0, 255]; masks are float32 (H, W) alpha
in [0, 1] (anti-aliased by supersampling).
"""

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPE_NAMES",
    "TEXTURE_NAMES",
    "shape_alpha",
    "make_texture",
    "make_background",
    "draw_distractors",
    "hsv_colour",
]

SHAPE_NAMES = ("circle", "square", "triangle", "star", "ring", "cross")
TEXTURE_NAMES = ("solid", "stripes", "checker", "gradient", "noise")


def hsv_colour(h, s, v):
    """RGB float32 (3,) in [0, 255] from hue in degrees, saturation and value in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb((h % 360.0) / 360.0, s, v), dtype=np.float32) * 255.0


def _unit_outline(name, rng):
    """Closed outline of `name` in unit coordinates (circumradius 1), or None for round shapes."""
    if name == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) / math.sqrt(2.0)
    if name == "triangle":
        a = np.deg2rad([90.0, 210.0, 330.0])
        return np.stack([np.cos(a), np.sin(a)], 1)
    if name == "star":
        inner = rng.uniform(0.38, 0.5)
        a = np.deg2rad(90.0 + 36.0 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if name == "cross":
        w = rng.uniform(0.3, 0.42)  # half arm width relative to the half length
        pts = [
            (w, 1),
            (w, w),
            (1, w),
            (1, -w),
            (w, -w),
            (w, -1),
            (-w, -1),
            (-w, -w),
            (-1, -w),
            (-1, w),
            (-w, w),
            (-w, 1),
        ]
        return np.array(pts, np.float64) / math.hypot(1.0, w)
    return None


def shape_alpha(name, size, rng, supersample=4):
    """Anti-aliased alpha mask of one shape.

    Args:
        name: one of `SHAPE_NAMES`.
        size: diameter of the shape's circumscribed circle in pixels (the nominal object size).
        rng: random generator (rotation, aspect ratio, shape details).
        supersample: drawing resolution factor; averaged down for anti-aliasing.

    Returns:
        float32 (S, S) alpha, S = ceil(size) + 2, the shape centred in it.
    """
    if name not in SHAPE_NAMES:
        raise ValueError(f"unknown shape {name!r}; expected one of {SHAPE_NAMES}")
    side = int(math.ceil(size)) + 2
    big = side * supersample
    centre = big / 2.0
    radius = size * supersample / 2.0
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    outline = _unit_outline(name, rng)
    if outline is None:
        draw.ellipse([centre - radius, centre - radius, centre + radius, centre + radius], fill=255)
        if name == "ring":
            inner = radius * rng.uniform(0.5, 0.7)
            draw.ellipse([centre - inner, centre - inner, centre + inner, centre + inner], fill=0)
    else:
        aspect = math.sqrt(rng.uniform(0.75, 1.33))
        outline = outline * np.array([aspect, 1.0 / aspect])
        outline = outline / np.abs(outline).max(0).max()  # keep it inside the circumcircle
        theta = rng.uniform(0.0, 2.0 * math.pi)
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        pts = outline @ rot.T * radius + centre
        draw.polygon([tuple(p) for p in pts.tolist()], fill=255)
    small = canvas.resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _shade(colour, rng):
    """A second colour for two-tone textures: the base pushed towards black or white."""
    target = 0.0 if rng.random() < 0.5 else 255.0
    return colour + (target - colour) * rng.uniform(0.35, 0.6)


def make_texture(kind, height, width, colour, rng):
    """A textured fill (height, width, 3) float32 around `colour` (RGB in [0, 255])."""
    if kind not in TEXTURE_NAMES:
        raise ValueError(f"unknown texture {kind!r}; expected one of {TEXTURE_NAMES}")
    colour = np.asarray(colour, np.float32)
    if kind == "solid":
        return np.broadcast_to(colour, (height, width, 3)).astype(np.float32)
    other = _shade(colour, rng)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    if kind == "stripes":
        theta = rng.uniform(0.0, math.pi)
        period = rng.uniform(4.0, 12.0)
        u = xs * math.cos(theta) + ys * math.sin(theta)
        t = ((u % period) < period / 2.0).astype(np.float32)
    elif kind == "checker":
        cell = int(rng.integers(3, 9))
        t = (((xs // cell) + (ys // cell)) % 2).astype(np.float32)
    elif kind == "gradient":
        t = _ramp(height, width, rng.uniform(0.0, 2.0 * math.pi))
    else:  # noise
        sigma = rng.uniform(18.0, 40.0)
        noise = rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(sigma)
        return np.clip(colour + noise, 0.0, 255.0)
    return colour + (other - colour) * t[..., None]


def _ramp(height, width, theta):
    """float32 (height, width) linear ramp from 0 to 1 along direction `theta`."""
    ys = np.arange(height, dtype=np.float32)[:, None] * np.float32(math.sin(theta))
    xs = np.arange(width, dtype=np.float32)[None, :] * np.float32(math.cos(theta))
    u = xs + ys
    lo, hi = float(u.min()), float(u.max())
    return (u - np.float32(lo)) / np.float32(max(hi - lo, 1.0))


def _value_noise(height, width, rng, cells, colours):
    """Smooth colour noise: a random (cells x cells) colour grid upsampled bilinearly."""
    grid = colours[rng.integers(0, len(colours), (cells, cells))].astype(np.uint8)
    img = Image.fromarray(grid, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def make_background(height, width, rng):
    """A cluttered background: a colour gradient and/or smooth colour noise."""

    def dull():
        return hsv_colour(rng.uniform(0, 360), rng.uniform(0.0, 0.55), rng.uniform(0.15, 0.9))

    t = _ramp(height, width, rng.uniform(0.0, 2.0 * math.pi))[..., None]
    c0, c1 = dull(), dull()
    gradient = c0 + (c1 - c0) * t
    palette = np.stack([dull() for _ in range(4)])
    noise = _value_noise(height, width, rng, int(rng.integers(3, 9)), palette)
    mix = float(rng.choice([0.0, 0.5, 1.0]))
    if mix == 0.0:
        return gradient
    return gradient * (1.0 - mix) + noise * mix


def draw_distractors(image, rng, max_lines=6, max_blobs=4):
    """Paint clutter that is not an object: thin random lines and irregular translucent blobs.

    Args:
        image: float32 (H, W, 3), modified in place.
    """
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(0, max_blobs + 1))):
        radius = rng.uniform(6.0, 40.0)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        n = int(rng.integers(9, 17))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        # irregular radius (never a circle), elongated: clearly not one of the categories
        r = radius * rng.uniform(0.45, 1.0, n) * np.where(np.arange(n) % 2 == 0, 1.0, 0.55)
        pts = np.stack(
            [cx + r * np.cos(angles) * rng.uniform(1.0, 2.2), cy + r * np.sin(angles)], 1
        )
        x0, y0 = max(int(pts[:, 0].min()), 0), max(int(pts[:, 1].min()), 0)
        x1, y1 = min(int(pts[:, 0].max()) + 1, width), min(int(pts[:, 1].max()) + 1, height)
        opacity = rng.uniform(0.3, 0.75)
        colour = hsv_colour(rng.uniform(0, 360), rng.uniform(0.0, 0.6), rng.uniform(0.2, 1.0))
        if x1 <= x0 or y1 <= y0:
            continue
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in pts.tolist()], fill=255)
        a = np.asarray(mask, np.float32)[..., None] * np.float32(opacity / 255.0)
        region = image[y0:y1, x0:x1]
        region += a * (colour - region)
    n_lines = int(rng.integers(0, max_lines + 1))
    if n_lines:
        layer = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(layer)
        for _ in range(n_lines):
            xy = [
                float(rng.uniform(-20, width + 20)),
                float(rng.uniform(-20, height + 20)),
                float(rng.uniform(-20, width + 20)),
                float(rng.uniform(-20, height + 20)),
            ]
            colour = hsv_colour(rng.uniform(0, 360), rng.uniform(0, 1), rng.uniform(0.1, 1))
            draw.line(xy, fill=tuple(int(c) for c in colour), width=int(rng.integers(1, 4)))
        image[...] = np.asarray(layer, np.float32)
    return image
