"""The built-in dataset: procedurally generated, deterministic COCO-format shape detection.

A scene is a pure function of (seed, split, image index): a cluttered background (gradients,
smooth colour noise, distractor lines and blobs that are not objects), then 1-8 shapes of 6
categories with category-typical colours and random textures, painted largest first (so smaller
shapes partly occlude bigger ones). A shape is re-placed when it would leave an earlier shape, or
itself, less than `min_visible_fraction` visible (occlusion or image border), and dropped after
`max_placement_tries`, so every painted shape is annotated and no annotation is mostly hidden.
Boxes are the visible region's bounding box.

Object sizes are drawn from buckets (8 px .. larger than the image) so that every feature level of
a stride 8/16/32/64 detector gets foreground under FCOS-style max-side-distance ranges
(0, 64], (64, 128], (128, 256], (256, inf) (Focus-DETR's label assignment).
"""

import io
import json
import math
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Tuple

import numpy as np
from PIL import Image

from .shapes import (
    SHAPE_NAMES,
    TEXTURE_NAMES,
    draw_distractors,
    hsv_colour,
    make_background,
    make_texture,
    shape_alpha,
)

__all__ = ["SyntheticShapesRecipe", "CATEGORIES", "render_scene", "generate_split"]

# COCO categories (ids 1..6); the hue is each category's typical colour.
CATEGORIES = [
    {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_NAMES)
]
CATEGORY_HUES = {
    "circle": 0.0,
    "square": 120.0,
    "triangle": 225.0,
    "star": 55.0,
    "ring": 295.0,
    "cross": 180.0,
}


@dataclass(frozen=True)
class SyntheticShapesRecipe:
    """Every constant of the generator. Changing any of them must bump `version`.

    Attributes:
        version: part of the cache directory name, so a recipe change regenerates.
        image_size: (min, max) of width and of height, drawn independently.
        objects_per_image: (min, max) number of shapes attempted per image.
        size_buckets: (min, max) nominal diameter in pixels of each size bucket.
        bucket_probs: probability of each size bucket.
        max_per_bucket: at most this many shapes per image from each bucket (big shapes occlude).
        category_colour_prob: probability of a category-typical hue (else any hue).
        min_visible_fraction: a shape must keep at least this fraction of its pixels visible.
        max_placement_tries: re-placements before a shape is dropped.
        sensor_noise: (min, max) std of per-pixel Gaussian noise over the whole image.
        jpeg_quality: quality of the written JPEG files.
        splits: (name, number of images) of each split.
    """

    version: str = "v2"
    image_size: Tuple[int, int] = (256, 320)
    objects_per_image: Tuple[int, int] = (1, 8)
    size_buckets: Tuple[Tuple[float, float], ...] = (
        (10.0, 24.0),
        (24.0, 64.0),
        (64.0, 128.0),
        (128.0, 256.0),
        (256.0, 420.0),
    )
    bucket_probs: Tuple[float, ...] = (0.24, 0.28, 0.22, 0.14, 0.12)
    max_per_bucket: Tuple[int, ...] = (8, 8, 4, 2, 1)
    category_colour_prob: float = 0.8
    min_visible_fraction: float = 0.5
    max_placement_tries: int = 30
    sensor_noise: Tuple[float, float] = (0.0, 8.0)
    jpeg_quality: int = 90
    splits: Tuple[Tuple[str, int], ...] = (("train", 1600), ("val", 200))
    seed: int = 20230802

    def num_images(self, split):
        for name, n in self.splits:
            if name == split:
                return n
        raise KeyError(f"unknown split {split!r}; the recipe has {[s for s, _ in self.splits]}")


def _sample_objects(rng, recipe):
    """Sizes and categories of the shapes attempted in one image (not yet placed)."""
    n = int(rng.integers(recipe.objects_per_image[0], recipe.objects_per_image[1] + 1))
    counts = [0] * len(recipe.size_buckets)
    objects = []
    for _ in range(n):
        bucket = int(rng.choice(len(recipe.size_buckets), p=recipe.bucket_probs))
        while counts[bucket] >= recipe.max_per_bucket[bucket]:
            bucket -= 1  # a smaller bucket instead of a third huge shape
        counts[bucket] += 1
        lo, hi = recipe.size_buckets[bucket]
        size = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        category = int(rng.integers(0, len(SHAPE_NAMES)))
        objects.append((size, category))
    # largest first, with jitter so that a smaller shape is sometimes painted under a bigger one
    order = np.argsort([-s * rng.uniform(0.7, 1.3) for s, _ in objects], kind="stable")
    return [objects[i] for i in order]


def render_scene(rng, recipe):
    """Render one image and its annotations.

    Args:
        rng: `numpy.random.Generator`, the only source of randomness.
        recipe: `SyntheticShapesRecipe`.

    Returns:
        (image, annotations): uint8 (H, W, 3) RGB; list of dicts with "bbox" (XYWH, visible
        region, whole pixels), "area" (visible pixels) and "category_id" (1-based).
    """
    width = int(rng.integers(recipe.image_size[0], recipe.image_size[1] + 1))
    height = int(rng.integers(recipe.image_size[0], recipe.image_size[1] + 1))
    image = make_background(height, width, rng)
    draw_distractors(image, rng)
    owner = np.full((height, width), -1, np.int32)  # index of the shape that owns each pixel
    full_area, visible_area, placed = [], [], []
    for size, category in _sample_objects(rng, recipe):
        name = SHAPE_NAMES[category]
        alpha = shape_alpha(name, size, rng)
        side = alpha.shape[0]
        solid = alpha > 0.5
        total = int(solid.sum())
        for _ in range(recipe.max_placement_tries):
            x0 = int(round(rng.uniform(0, width) - side / 2))
            y0 = int(round(rng.uniform(0, height) - side / 2))
            ix0, iy0 = max(x0, 0), max(y0, 0)
            ix1, iy1 = min(x0 + side, width), min(y0 + side, height)
            if ix1 <= ix0 or iy1 <= iy0:
                continue
            local = solid[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
            if local.sum() < recipe.min_visible_fraction * total:
                continue  # mostly outside the image
            covered = owner[iy0:iy1, ix0:ix1][local]
            lost = np.bincount(covered + 1, minlength=len(placed) + 1)[1:]
            if len(placed) and np.any(
                np.asarray(visible_area) - lost
                < recipe.min_visible_fraction * np.asarray(full_area)
            ):
                continue  # would hide an earlier shape
            break
        else:
            continue  # no valid position: drop the shape
        if rng.random() < recipe.category_colour_prob:
            hue = CATEGORY_HUES[name] + rng.uniform(-15.0, 15.0)
        else:
            hue = rng.uniform(0.0, 360.0)
        colour = hsv_colour(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
        texture = TEXTURE_NAMES[int(rng.integers(0, len(TEXTURE_NAMES)))]
        fill = make_texture(texture, iy1 - iy0, ix1 - ix0, colour, rng)
        a = alpha[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0, None]
        region = image[iy0:iy1, ix0:ix1]
        region *= 1.0 - a
        region += a * fill
        visible_area = [v - int(l) for v, l in zip(visible_area, lost)]
        owner[iy0:iy1, ix0:ix1][local] = len(placed)
        full_area.append(total)
        visible_area.append(int(local.sum()))
        placed.append((category, (ix0, iy0, ix1, iy1)))
    sigma = rng.uniform(*recipe.sensor_noise)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    annotations = []
    for k, (category, (x0, y0, x1, y1)) in enumerate(placed):
        ys, xs = np.nonzero(owner[y0:y1, x0:x1] == k)
        bx0, by0 = x0 + int(xs.min()), y0 + int(ys.min())
        bw, bh = int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1
        # floats, as in COCO: detectron2's box transforms write back into the input's dtype
        annotations.append(
            {
                "bbox": [float(bx0), float(by0), float(bw), float(bh)],
                "area": int(len(xs)),
                "category_id": category + 1,
            }
        )
    return image, annotations


def scene_rng(recipe, split, index):
    """The generator of image `index` of `split`: independent of every other image and split."""
    return np.random.default_rng([recipe.seed, zlib.crc32(split.encode()), index])


def encode_jpeg(image, quality):
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def generate_split(out_dir, split, recipe=None, num_images=None, progress=True):
    """Write one split: `out_dir/images/*.jpg` and `out_dir/instances.json` (COCO format).

    Args:
        out_dir: directory to write into (created).
        split: split name of the recipe ("train" or "val").
        recipe: `SyntheticShapesRecipe` (default: the built-in one).
        num_images: number of images (default: the recipe's size of the split). Image i is the
            same whatever the total, so a smaller count gives a prefix of the split.
        progress: show a tqdm progress bar.

    Returns:
        Path of the json file.
    """
    recipe = recipe or SyntheticShapesRecipe()
    n = recipe.num_images(split) if num_images is None else int(num_images)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    indices = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(
            indices,
            desc=f"Generating synthetic_shapes_{split}",
            unit="img",
            mininterval=0.5,
            dynamic_ncols=True,
        )
    for i in indices:
        image, annos = render_scene(scene_rng(recipe, split, i), recipe)
        file_name = f"{i:06d}.jpg"
        (out_dir / "images" / file_name).write_bytes(encode_jpeg(image, recipe.jpeg_quality))
        images.append(
            {
                "id": i + 1,
                "file_name": file_name,
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
            }
        )
        for a in annos:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0, **a})
    coco = {
        "info": {
            "description": f"focus_detr synthetic shapes, split {split}",
            "version": recipe.version,
            "recipe": asdict(recipe),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    json_file = out_dir / "instances.json"
    json_file.write_text(json.dumps(coco))
    return json_file
