"""A COCO-format json of one's own as a dataset given by plain config values.

`coco_json_dataset_dicts(json=..., images=...)` registers the json (detectron2's
`register_coco_instances`, name = the json path unless `names` is given) the first time a loader
asks for it, checks the model's `num_classes` against the json's categories, and returns the
dataset dicts like `get_detection_dataset_dicts`. So a config whose dataset is this call trains on
any COCO json from the command line:

    python tools/train_net.py --config-file projects/focus_detr/configs/focus_detr_tiny_coco_json.py \\
        dataloader.train.dataset.json=data/train.json dataloader.train.dataset.images=data/images \\
        dataloader.test.dataset.json=data/val.json dataloader.test.dataset.images=data/images \\
        model.num_classes=3
"""

import json as jsonlib
import os
from typing import Optional

from detectron2.config import LazyCall as L
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from .build import get_detection_dataset_dicts

__all__ = [
    "coco_json_categories",
    "coco_json_dataset_dicts",
    "register_coco_json",
    "use_coco_json",
]


def coco_json_categories(json_file: str):
    """The category names of a COCO json, in id order (detectron2's contiguous class order)."""
    try:
        with open(json_file) as f:
            categories = jsonlib.load(f).get("categories")
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {json_file}") from None
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{json_file} is not a COCO json object: {e}") from e
    if not categories:
        raise ValueError(f"{json_file} has no 'categories': a COCO json lists its classes there")
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


def register_coco_json(name: str, json_file: str, image_root: str) -> str:
    """Register `json_file` / `image_root` as `name` unless it already is (with the same
    files; other files under a registered name are an error). Returns `name`."""
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        registered = (meta.get("json_file", None), meta.get("image_root", None))
        if registered != (json_file, image_root) and registered[0] is not None:
            raise ValueError(
                f"dataset {name!r} is already registered with json {registered[0]} and images "
                f"{registered[1]}, not {json_file} / {image_root}: give another `names`"
            )
        return name
    register_coco_instances(name, {}, json_file, image_root)
    return name


def coco_json_dataset_dicts(
    json: Optional[str] = None,
    images: Optional[str] = None,
    names: Optional[str] = None,
    num_classes: Optional[int] = None,
    filter_empty: bool = True,
    key: str = "dataloader.*.dataset",
):
    """Dataset dicts of a COCO-format json, registered on first use.

    Args:
        json: the annotation file.
        images: the folder the json's `file_name`s are relative to.
        names: the registered name (default: the json path), also read by the evaluator.
        num_classes: the model's class count (e.g. `${model.num_classes}`); a count other than
            the json's number of categories is an error naming both.
        filter_empty: drop images without annotations (training).
        key: the config key of this dataset, for the error messages.
    """
    for value, field, example in (
        (json, "json", "data/train.json"),
        (images, "images", "data/images"),
    ):
        if not value:
            raise ValueError(
                f"{key}.{field} is not set: give it on the command line, e.g. "
                f"{key}.{field}={example}"
            )
    if not os.path.isfile(json):
        raise FileNotFoundError(f"{key}.json: annotation file not found: {json}")
    if not os.path.isdir(images):
        raise FileNotFoundError(f"{key}.images: image folder not found: {images}")
    classes = coco_json_categories(json)
    if num_classes is not None and int(num_classes) != len(classes):
        raise ValueError(
            f"model.num_classes={num_classes} but {json} has {len(classes)} categories "
            f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}): set "
            f"model.num_classes={len(classes)}"
        )
    name = register_coco_json(names or json, json, images)
    return get_detection_dataset_dicts(name, filter_empty=filter_empty)


def use_coco_json(dataloader):
    """Swap the train and test datasets of a LazyConfig `dataloader` for COCO jsons given by
    plain values (`json`, `images`, unset until the command line sets them; `names` defaults to
    the json path, which `${..test.dataset.names}` evaluators read; `num_classes` follows
    `model.num_classes`). Returns `dataloader`."""
    for split, filter_empty in (("train", True), ("test", False)):
        dataloader[split].dataset = L(coco_json_dataset_dicts)(
            json=None,
            images=None,
            names="${.json}",
            num_classes="${model.num_classes}",
            filter_empty=filter_empty,
            key=f"dataloader.{split}.dataset",
        )
    return dataloader
