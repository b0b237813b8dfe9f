"""The built-in synthetic dataset: deterministic, valid COCO, every split and scale range filled."""

import hashlib
import json
import multiprocessing as mp
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from focus_detr.data import (
    SYNTHETIC_DATASETS,
    SyntheticShapesRecipe,
    generate_split,
    prepare_synthetic_split,
    register_synthetic_datasets,
)
from focus_detr.data import synthetic_shapes

# Focus-DETR's label assignment (reference facts): strides and max-side-distance ranges
STRIDES = (8, 16, 32, 64)
RANGES = ((-1, 64), (64, 128), (128, 256), (256, float("inf")))


def _digest(split_dir):
    """sha256 of the json and of every image file of a generated split."""
    files = [split_dir / "instances.json"] + sorted((split_dir / "images").iterdir())
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    recipe = SyntheticShapesRecipe()
    a = generate_split(tmp_path / "a", "val", recipe, num_images=6, progress=False).parent
    b = generate_split(tmp_path / "b", "val", recipe, num_images=6, progress=False).parent
    assert len(_digest(a)) == 7
    assert _digest(a) == _digest(b)
    c = generate_split(
        tmp_path / "c", "val", replace(recipe, seed=recipe.seed + 1), num_images=6, progress=False
    ).parent
    differing = {k for k in _digest(a) if _digest(a)[k] != _digest(c)[k]}
    assert "instances.json" in differing and len(differing) == 7


def test_image_i_does_not_depend_on_split_size(tmp_path):
    small = generate_split(tmp_path / "s", "train", num_images=3, progress=False).parent
    big = generate_split(tmp_path / "b", "train", num_images=5, progress=False).parent
    ds, db = _digest(small), _digest(big)
    assert all(ds[f"{i:06d}.jpg"] == db[f"{i:06d}.jpg"] for i in range(3))


def _level_foreground(box, width, height):
    """Foreground tokens per level for one XYWH box, computed as Focus-DETR labels them."""
    x0, y0, w, h = box
    x1, y1 = x0 + w, y0 + h
    counts = []
    for s, (lo, hi) in zip(STRIDES, RANGES):
        cx = np.arange(-(-width // s)) * s + s // 2
        cy = np.arange(-(-height // s)) * s + s // 2
        px, py = np.meshgrid(cx, cy)
        d = np.stack([px - x0, py - y0, x1 - px, y1 - py])
        inside = (d > 0).all(0)
        m = d.max(0)
        counts.append(int((inside & (m > lo) & (m <= hi)).sum()))
    return counts


@pytest.mark.parametrize("split", ["train", "val"])
def test_split_is_valid_coco_with_every_category_and_scale_level(synthetic_splits, split):
    d = synthetic_splits[split]
    coco = COCO(str(d / "instances.json"))
    recipe = SyntheticShapesRecipe()
    assert len(coco.imgs) == recipe.num_images(split)
    assert len(coco.anns) >= 3 * len(coco.imgs)  # about 4.4 objects per image
    assert sorted(c["name"] for c in coco.cats.values()) == sorted(
        ["circle", "square", "triangle", "star", "ring", "cross"]
    )
    assert {a["category_id"] for a in coco.anns.values()} == set(coco.cats)
    per_level = np.zeros(4, int)
    sizes = []
    for a in coco.anns.values():
        img = coco.imgs[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= img["width"] and y + h <= img["height"]
        assert 0 < a["area"] <= w * h and a["iscrowd"] == 0
        per_level += _level_foreground(a["bbox"], img["width"], img["height"])
        sizes.append(max(w, h))
    assert (per_level > 0).all(), f"a feature level without foreground: {per_level}"
    assert min(sizes) <= 10 and max(sizes) > 256
    # some objects overlap (occlusion): pairs of boxes in one image that intersect
    overlaps = 0
    for img_id in list(coco.imgs)[:100]:
        boxes = np.array([coco.anns[i]["bbox"] for i in coco.getAnnIds(imgIds=img_id)], float)
        if len(boxes) < 2:
            continue
        x0, y0 = boxes[:, 0], boxes[:, 1]
        x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
        iw = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
        ih = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
        overlaps += int(np.triu((iw > 0) & (ih > 0), 1).sum())
    assert overlaps > 20


def test_image_files_match_json(synthetic_splits):
    d = synthetic_splits["val"]
    coco = json.loads((d / "instances.json").read_text())
    for img in coco["images"][:40]:
        with Image.open(d / "images" / img["file_name"]) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == (img["width"], img["height"])
    assert len(list((d / "images").iterdir())) == len(coco["images"])


def test_visible_box_is_the_shape_region():
    """A lone shape's box is where its pixels differ from the same scene without it."""
    recipe = replace(SyntheticShapesRecipe(), objects_per_image=(1, 1), sensor_noise=(0.0, 0.0))
    checked = 0
    for i in range(6):
        rng = synthetic_shapes.scene_rng(recipe, "val", i)
        image, annos = synthetic_shapes.render_scene(rng, recipe)
        if not annos:
            continue
        no_shape = replace(recipe, objects_per_image=(0, 0))
        # same background: the background is drawn before any object-dependent random draw
        bg, _ = synthetic_shapes.render_scene(
            synthetic_shapes.scene_rng(no_shape, "val", i), no_shape
        )
        diff = np.abs(image.astype(int) - bg.astype(int)).max(-1) > 40
        ys, xs = np.nonzero(diff)
        x, y, w, h = annos[0]["bbox"]
        assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h
        assert xs.max() - xs.min() + 1 >= 0.6 * w or w < 12  # the shape fills its box
        checked += 1
    assert checked >= 4


def test_registered_through_coco_path():
    register_synthetic_datasets()  # idempotent
    register_synthetic_datasets()
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name, split in SYNTHETIC_DATASETS.items():
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "coco"
        assert meta.json_file.endswith(f"synthetic_shapes_v2/{split}/instances.json")
        assert list(meta.thing_classes) == ["circle", "square", "triangle", "star", "ring", "cross"]


def test_catalog_dicts(synthetic_splits):
    from detectron2.data import DatasetCatalog

    dicts = DatasetCatalog.get("synthetic_shapes_val")
    assert len(dicts) == 200
    assert Path(dicts[0]["file_name"]).is_file()
    assert {a["category_id"] for d in dicts for a in d["annotations"]} == set(range(6))


SMALL = replace(SyntheticShapesRecipe(), splits=(("val", 12),))


def _prepare(root):
    return str(prepare_synthetic_split("val", SMALL, root=root, progress=False))


def test_concurrent_generation_is_safe(tmp_path):
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        dirs = pool.map(_prepare, [tmp_path, tmp_path])
    assert dirs[0] == dirs[1]
    split = Path(dirs[0])
    assert len(json.loads((split / "instances.json").read_text())["images"]) == 12
    leftovers = [p.name for p in split.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []
    ref = generate_split(tmp_path / "ref", "val", SMALL, progress=False).parent
    assert _digest(split) == _digest(ref)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    recipe = replace(SyntheticShapesRecipe(), splits=(("val", 5),))
    calls = {"n": 0}
    real = synthetic_shapes.render_scene

    def failing(rng, r):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(rng, r)

    monkeypatch.setattr(synthetic_shapes, "render_scene", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare_synthetic_split("val", recipe, root=tmp_path, progress=False)
    parent = tmp_path / "synthetic_shapes_v2"
    assert [p.name for p in parent.iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.setattr(synthetic_shapes, "render_scene", real)
    out = prepare_synthetic_split("val", recipe, root=tmp_path, progress=False)
    assert len(list((out / "images").iterdir())) == 5


def test_generation_removes_stale_temporaries_and_honours_the_umask(tmp_path):
    """A killed generation's temporary folder is removed by the next generation of that split
    (not another split's); the finished split has the usual umask permissions, not 0700."""
    import os
    import stat

    from focus_detr.data import SyntheticShapesRecipe, prepare_synthetic_split

    recipe = SyntheticShapesRecipe(version="stale-test", splits=(("train", 2), ("val", 1)))
    parent = tmp_path / "synthetic_shapes_stale-test"
    stale = parent / ".train.tmp-killed"
    (stale / "images").mkdir(parents=True)
    (stale / "images" / "000000.jpg").write_bytes(b"half")
    other = parent / ".val.tmp-running"
    other.mkdir()
    old = os.umask(0o022)
    try:
        target = prepare_synthetic_split("train", recipe, root=tmp_path, progress=False)
    finally:
        os.umask(old)
    assert not stale.exists() and other.exists()
    assert (target / "instances.json").is_file()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert [p.name for p in parent.iterdir() if p.name.startswith(".train.tmp")] == []
