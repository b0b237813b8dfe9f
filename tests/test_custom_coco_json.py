"""Training on one's own COCO-format json from the command line: the tiny config's datasets are
plain config values registered on first use, and model.num_classes is checked against the json's
categories."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, run_train_net

CONFIG = str(REPO_ROOT / "projects" / "focus_detr" / "configs" / "focus_detr_tiny_coco_json.py")
CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "bar"}]  # ids need not be 1..K


def write_coco_json(root, images=4):
    """`images` PNGs with one bright square and one bright bar each, and their COCO json."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    coco = {"images": [], "annotations": [], "categories": CATEGORIES}
    for i in range(images):
        h, w = 96, 128
        pixels = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        boxes = [(3, [10 + 4 * i, 12, 30, 30]), (7, [60, 20 + 3 * i, 50, 14])]  # x, y, w, h
        for category, (x, y, bw, bh) in boxes:
            pixels[y : y + bh, x : x + bw] = 200 if category == 3 else 120
            coco["annotations"].append(
                dict(
                    id=len(coco["annotations"]) + 1,
                    image_id=i + 1,
                    category_id=category,
                    bbox=[x, y, bw, bh],
                    area=bw * bh,
                    iscrowd=0,
                )
            )
        Image.fromarray(pixels).save(root / "images" / f"img{i}.png")
        coco["images"].append(dict(id=i + 1, file_name=f"img{i}.png", height=h, width=w))
    path = root / "train.json"
    path.write_text(json.dumps(coco))
    return path, root / "images"


def _data_args(json_file, images):
    return [
        f"dataloader.{split}.dataset.{key}={value}"
        for split in ("train", "test")
        for key, value in (("json", json_file), ("images", images))
    ]


def test_train_and_evaluate_on_a_coco_json_from_the_command_line(tmp_path):
    json_file, images = write_coco_json(tmp_path)
    out = tmp_path / "run"
    proc = run_train_net(
        "--config-file",
        CONFIG,
        *_data_args(json_file, images),
        "model.num_classes=2",
        "train.max_iter=2",
        "train.log_period=1",
        "dataloader.train.total_batch_size=2",
        f"train.output_dir={out}",
    )
    assert "Evaluation results for bbox" in proc.stdout
    assert (out / "model_final.pth").is_file()


def test_num_classes_other_than_the_json_categories_is_named(tmp_path):
    json_file, images = write_coco_json(tmp_path, images=1)
    proc = run_train_net(
        "--config-file",
        CONFIG,
        *_data_args(json_file, images),
        "model.num_classes=6",
        "train.max_iter=1",
        f"train.output_dir={tmp_path}",
        check=False,
    )
    assert proc.returncode != 0
    assert (
        f"model.num_classes=6 but {json_file} has 2 categories (square, bar): set "
        "model.num_classes=2"
    ) in proc.stdout


def test_unset_json_is_named(tmp_path):
    proc = run_train_net(
        "--config-file", CONFIG, "train.max_iter=1", f"train.output_dir={tmp_path}", check=False
    )
    assert proc.returncode != 0
    assert "dataloader.train.dataset.json is not set" in proc.stdout


def test_registered_on_first_use_and_checked(tmp_path):
    from focus_detr.data.custom import coco_json_dataset_dicts

    json_file, images = write_coco_json(tmp_path, images=2)
    dicts = coco_json_dataset_dicts(json=str(json_file), images=str(images), num_classes=2)
    assert len(dicts) == 2 and {a["category_id"] for d in dicts for a in d["annotations"]} == {
        0,
        1,
    }  # contiguous ids in the json's id order
    assert coco_json_dataset_dicts(str(json_file), str(images)) == dicts  # registered once
    with pytest.raises(ValueError, match="model.num_classes=3 but .* has 2 categories"):
        coco_json_dataset_dicts(str(json_file), str(images), num_classes=3)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        coco_json_dataset_dicts(str(json_file), str(tmp_path / "nope"))
