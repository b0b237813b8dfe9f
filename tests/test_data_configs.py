"""configs/common/data: the synthetic and COCO data configs build what they describe."""

import pytest
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T

from focus_detr.data import DetrDatasetMapper, get_detection_dataset_dicts
from focus_detr.engine import get_config


def _resize(aug):
    assert isinstance(aug, T.ResizeShortestEdge)
    return tuple(aug.short_edge_length), aug.max_size


def test_coco_config_is_detr_augmentation():
    dl = get_config("common/data/coco_detr.py").dataloader
    assert dl.train.dataset.names == "coco_2017_train" and dl.train.total_batch_size == 16
    assert dl.test.dataset.names == "coco_2017_val" and dl.evaluator.dataset_name == "coco_2017_val"
    train = instantiate(dl.train.mapper)
    test = instantiate(dl.test.mapper)
    assert isinstance(train, DetrDatasetMapper) and train.crop_prob == 0.5
    flip, resize = train.augmentation.augs
    assert isinstance(flip, T.RandomFlip)
    assert _resize(resize) == (tuple(range(480, 801, 32)), 1333)
    flip, pre, crop, post = train.augmentation_with_crop.augs
    assert _resize(pre)[0] == (400, 500, 600)
    assert (crop.crop_type, tuple(crop.crop_size)) == ("absolute_range", (384, 600))
    assert _resize(post) == (tuple(range(480, 801, 32)), 1333)
    (resize,) = test.augmentation.augs
    assert _resize(resize) == ((800, 800), 1333) and test.augmentation_with_crop is None


def test_coco_is_registered_by_detectron2_and_missing_files_are_named(monkeypatch, tmp_path):
    assert {"coco_2017_train", "coco_2017_val"} <= set(DatasetCatalog.list())
    from detectron2.data import MetadataCatalog

    json_file = MetadataCatalog.get("coco_2017_val").json_file
    assert json_file.endswith("coco/annotations/instances_val2017.json")
    import os

    if os.path.exists(json_file):
        pytest.skip("COCO is present here")
    with pytest.raises(FileNotFoundError, match="coco_2017_val.*instances_val2017.json"):
        get_detection_dataset_dicts("coco_2017_val")


def test_synthetic_config_loaders(synthetic_splits):
    dl = get_config("common/data/synthetic.py").dataloader
    dl.train.num_workers = dl.test.num_workers = 0
    dl.train.total_batch_size = 4
    batch = next(iter(instantiate(dl.train)))
    assert len(batch) == 4
    for x in batch:
        assert x["image"].shape[0] == 3 and "instances" in x
        h, w = x["image"].shape[1:]
        assert 144 <= min(h, w) <= 320 and max(h, w) <= 480
    test = instantiate(dl.test)
    assert len(test.dataset) == 200  # filter_empty=False: every val image is evaluated
    x = next(iter(test))[0]
    assert min(x["image"].shape[1:]) == 288 and "instances" not in x
    evaluator = instantiate(dl.evaluator)
    assert evaluator._tasks == ("bbox",)
