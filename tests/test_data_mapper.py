"""DetrDatasetMapper: augmentation of images and boxes, train/test behaviour, degenerate input."""

import copy

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from focus_detr.data import DetrDatasetMapper


@pytest.fixture(scope="module")
def val_dict(synthetic_splits):
    dicts = DatasetCatalog.get("synthetic_shapes_val")
    return next(d for d in dicts if len(d["annotations"]) >= 3)


def _xyxy(d):
    return np.array(
        [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]],
        np.float32,
    )


def test_flip_moves_pixels_and_boxes(val_dict):
    mapper = DetrDatasetMapper([T.RandomFlip(prob=1.0)], None, is_train=True)
    out = mapper(val_dict)
    original = np.asarray(Image.open(val_dict["file_name"]).convert("RGB"))
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), original[:, ::-1])
    w = val_dict["width"]
    boxes = _xyxy(val_dict)
    expected = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    np.testing.assert_allclose(out["instances"].gt_boxes.tensor.numpy(), expected)
    assert out["instances"].gt_classes.tolist() == [
        a["category_id"] for a in val_dict["annotations"]
    ]
    assert "annotations" in val_dict  # the input dict is not modified


def test_resize_scales_boxes(val_dict):
    mapper = DetrDatasetMapper([T.ResizeShortestEdge(144, max_size=1000)], None, is_train=True)
    out = mapper(val_dict)
    h, w = out["image"].shape[1:]
    assert min(h, w) == 144
    sx, sy = w / val_dict["width"], h / val_dict["height"]
    boxes = _xyxy(val_dict) * np.array([sx, sy, sx, sy], np.float32)
    np.testing.assert_allclose(
        out["instances"].gt_boxes.tensor.numpy(), boxes, rtol=1e-5, atol=1e-3
    )


def test_crop_branch_clips_and_drops_boxes(val_dict):
    np.random.seed(0)
    mapper = DetrDatasetMapper(
        [T.RandomFlip(prob=0.0)], [T.RandomCrop("absolute", (64, 64))], is_train=True, crop_prob=1.0
    )
    for _ in range(10):
        out = mapper(val_dict)
        assert tuple(out["image"].shape) == (3, 64, 64)
        b = out["instances"].gt_boxes.tensor
        assert ((b >= 0) & (b <= 64)).all()
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()  # empty boxes removed


def test_inference_mode_keeps_no_annotations(val_dict):
    mapper = DetrDatasetMapper([T.ResizeShortestEdge(288, max_size=480)], None, is_train=False)
    out = mapper(val_dict)
    assert "instances" not in out and "annotations" not in out
    assert out["image"].dtype == torch.uint8 and min(out["image"].shape[1:]) == 288
    assert (out["height"], out["width"]) == (val_dict["height"], val_dict["width"])


def test_degenerate_boxes_dropped_with_warning(val_dict):
    d = copy.deepcopy(val_dict)
    good = d["annotations"][0]
    d["annotations"] = [good] + [
        dict(good, bbox=b) for b in ([10, 10, 0, 5], [10, 10, -4, 5], [10, 10, 5, float("nan")])
    ]
    mapper = DetrDatasetMapper([T.RandomFlip(prob=0.0)], None, is_train=True)
    with pytest.warns(UserWarning, match=r"dropped 3 annotation.*") as rec:
        out = mapper(d)
    assert val_dict["file_name"] in str(rec[0].message)
    assert len(out["instances"]) == 1


def test_image_without_annotations_gives_empty_instances(val_dict):
    d = dict(copy.deepcopy(val_dict), annotations=[])
    out = DetrDatasetMapper([T.RandomFlip()], None, is_train=True)(d)
    assert len(out["instances"]) == 0 and out["instances"].gt_boxes.tensor.shape == (0, 4)


def test_undecodable_image(tmp_path, val_dict):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    d = dict(copy.deepcopy(val_dict), file_name=str(bad))
    train = DetrDatasetMapper([T.RandomFlip()], None, is_train=True)
    with pytest.warns(UserWarning, match="cannot decode image file .*broken.jpg.*skipped"):
        assert train(d) is None
    test = DetrDatasetMapper([T.RandomFlip()], None, is_train=False)
    with pytest.raises(RuntimeError, match="cannot decode image file .*broken.jpg"):
        test(d)
