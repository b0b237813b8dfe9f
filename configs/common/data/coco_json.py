"""Data config of a COCO-format json of one's own, with DETR's COCO augmentation
(`coco_detr.py`): the annotation files and image folders are plain values set on the command line,
the datasets are registered on first use (`focus_detr.data.custom.coco_json_dataset_dicts`), and
`model.num_classes` is checked against the json's categories.

    dataloader.train.dataset.json=data/train.json dataloader.train.dataset.images=data/images
    dataloader.test.dataset.json=data/val.json dataloader.test.dataset.images=data/images
    model.num_classes=3
"""

from focus_detr.data.custom import use_coco_json
from focus_detr.engine import get_config

dataloader = use_coco_json(get_config("common/data/coco_detr.py").dataloader)
