"""Bad input gives a clear error naming the file or key, or is skipped with a warning; no
checkpoint is lost."""

import json
import os
import shutil
import uuid

import pytest
import torch
from detectron2.data import build_detection_train_loader
from detectron2.data import transforms as T
from detectron2.data.datasets import register_coco_instances
from torch import nn

from conftest import TOY_CONFIG, run_train_net
from focus_detr.data import DetrDatasetMapper, get_detection_dataset_dicts
from focus_detr.engine import SafeDetectionCheckpointer, safe_load_checkpoint
from focus_detr.modeling import CheckpointMismatchError, DetrCheckpointer
from tests.tools_utils import load_tool


def _register(json_file, image_root):
    name = f"bad_input_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, str(json_file), str(image_root))
    return name


def _write(tmp_path, coco):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return path


def _annotation(ann_id, image_id, bbox=(5, 5, 20, 20)):
    """One COCO box annotation of category 1."""
    area = max(bbox[2], 0) * max(bbox[3], 0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": list(bbox),
        "area": area,
        "iscrowd": 0,
    }


def _register_dataset(tmp_path, image_root, images, annotations):
    """A registered one-category COCO dataset of `images` and `annotations`; its name."""
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    return _register(_write(tmp_path, coco), image_root)


@pytest.fixture
def image_dir(tmp_path, synthetic_splits):
    """Two real images (from the built-in val split) and one undecodable file."""
    d = tmp_path / "images"
    d.mkdir()
    val = json.loads((synthetic_splits["val"] / "instances.json").read_text())
    infos = []
    for i, img in enumerate(val["images"][:2]):
        shutil.copy(synthetic_splits["val"] / "images" / img["file_name"], d / f"ok{i}.jpg")
        infos.append(
            {"id": i + 1, "file_name": f"ok{i}.jpg", "width": img["width"], "height": img["height"]}
        )
    (d / "broken.jpg").write_bytes(b"not an image at all")
    infos.append({"id": 3, "file_name": "broken.jpg", "width": 100, "height": 100})
    return d, infos


def test_missing_annotation_file(tmp_path):
    name = _register(tmp_path / "nowhere" / "instances.json", tmp_path)
    with pytest.raises(FileNotFoundError, match=f"{name}.*nowhere/instances.json"):
        get_detection_dataset_dicts(name)


@pytest.mark.parametrize("content", ["{not json", json.dumps({"images": 3}), "[]"])
def test_malformed_annotation_file(tmp_path, content):
    path = tmp_path / "instances.json"
    path.write_text(content)
    name = _register(path, tmp_path)
    with pytest.raises(RuntimeError, match=f"cannot load dataset '{name}'.*{path}"):
        get_detection_dataset_dicts(name)


def test_unregistered_dataset_lists_the_registered_ones():
    with pytest.raises(KeyError, match="'no_such_dataset' is not registered.*synthetic_shapes_val"):
        get_detection_dataset_dicts("no_such_dataset")


def test_degenerate_boxes_dropped_with_warning(tmp_path, image_dir):
    d, infos = image_dir
    anns = [_annotation(1, 1), _annotation(2, 1, (5, 5, 0, 20)), _annotation(3, 2, (5, 5, -3, 20))]
    name = _register_dataset(tmp_path, d, infos[:2], anns)
    with pytest.warns(UserWarning, match=f"'{name}': dropped 2 annotation.*ok0.jpg"):
        dicts = get_detection_dataset_dicts(name, filter_empty=False)
    assert [len(x["annotations"]) for x in dicts] == [1, 0]
    # for training, the image left without any annotation is skipped
    with pytest.warns(UserWarning):
        assert [x["file_name"] for x in get_detection_dataset_dicts(name)] == [str(d / "ok0.jpg")]


def test_image_without_annotations(tmp_path, image_dir):
    d, infos = image_dir
    name = _register_dataset(tmp_path, d, infos[:2], [_annotation(1, 1)])
    assert len(get_detection_dataset_dicts(name, filter_empty=False)) == 2  # evaluation keeps it
    assert len(get_detection_dataset_dicts(name, filter_empty=True)) == 1  # training skips it


def test_undecodable_image_skipped_in_training(tmp_path, image_dir):
    d, infos = image_dir
    name = _register_dataset(tmp_path, d, infos, [_annotation(i, i) for i in (1, 2, 3)])
    mapper = DetrDatasetMapper([T.RandomFlip()], None, is_train=True)
    loader = build_detection_train_loader(
        dataset=get_detection_dataset_dicts(name), mapper=mapper, total_batch_size=2, num_workers=0
    )
    it = iter(loader)
    with pytest.warns(UserWarning, match="cannot decode image file .*broken.jpg"):
        seen = [x["file_name"] for _ in range(6) for x in next(it)]
    assert set(seen) == {str(d / "ok0.jpg"), str(d / "ok1.jpg")}


def test_unknown_override_key_names_the_key():
    tn = load_tool("train_net")
    args = tn.default_argument_parser().parse_args(
        ["--config-file", str(TOY_CONFIG), "train.max_iters=5"]
    )
    with pytest.raises(
        KeyError, match="unknown config key 'train.max_iters'.*did you mean 'max_iter'"
    ):
        tn.load_config(args)
    args = tn.default_argument_parser().parse_args(
        ["--config-file", str(TOY_CONFIG), "model.num_clases=3"]
    )
    with pytest.raises(KeyError, match="'model.num_clases'.*did you mean 'num_classes'"):
        tn.load_config(args)


def test_missing_config_file_is_named(tmp_path):
    tn = load_tool("train_net")
    args = tn.default_argument_parser().parse_args(["--config-file", str(tmp_path / "nope.py")])
    with pytest.raises(FileNotFoundError, match="nope.py"):
        tn.load_config(args)


def test_unknown_key_on_the_command_line_fails_before_training(tmp_path):
    proc = run_train_net(
        "--config-file",
        TOY_CONFIG,
        f"train.output_dir={tmp_path}",
        "train.max_iterr=3",
        check=False,
    )
    assert proc.returncode != 0
    assert "unknown config key 'train.max_iterr'" in proc.stdout
    assert not (tmp_path / "last_checkpoint").exists()


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)


def test_crash_while_saving_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    model = _Tiny()
    ckpt = SafeDetectionCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000009", iteration=9)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.fc.weight.add_(1.0)

    def dying_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save("model_0000019", iteration=19)
    monkeypatch.undo()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]
    loaded = safe_load_checkpoint(str(tmp_path / "model_0000009.pth"))
    assert loaded["iteration"] == 9
    assert all(torch.equal(loaded["model"][k], v) for k, v in good.items())


def test_corrupt_or_missing_checkpoint_is_named(tmp_path):
    bad = tmp_path / "model_final.pth"
    bad.write_bytes(b"\x80\x02 truncated")
    ckpt = SafeDetectionCheckpointer(_Tiny(), str(tmp_path))
    with pytest.raises(RuntimeError, match="cannot load checkpoint .*model_final.pth"):
        ckpt.load(str(bad))
    with pytest.raises(FileNotFoundError, match="other.pth"):
        ckpt.load(str(tmp_path / "other.pth"))


def test_strict_loading_names_every_kind_of_mismatch(tmp_path):
    """strict=True (evaluation, tools): missing, unexpected and wrongly shaped keys each raise,
    naming the file and the keys; an exact checkpoint loads; the default only logs them."""
    source = _Tiny()
    exact = tmp_path / "exact.pth"
    torch.save({"model": source.state_dict()}, exact)
    target = _Tiny()
    DetrCheckpointer(target, strict=True).load(str(exact))
    assert torch.equal(target.fc.weight, source.fc.weight)

    cases = {
        "missing": ({"fc.weight": torch.zeros(2, 3)}, r"1 missing keys \(fc\.bias\)"),
        "unexpected": (
            {**source.state_dict(), "head.weight": torch.zeros(1)},
            r"1 unexpected keys \(head\.weight\)",
        ),
        "shape": (
            {"fc.weight": torch.zeros(5, 3), "fc.bias": torch.zeros(2)},
            r"1 shape mismatches \(fc\.weight: checkpoint \(5, 3\), model \(2, 3\)\)",
        ),
    }
    for name, (state, pattern) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save({"model": state}, path)
        for checkpointer in (DetrCheckpointer, SafeDetectionCheckpointer):
            with pytest.raises(
                CheckpointMismatchError,
                match=f"checkpoint .*{name}.pth does not fit _Tiny: {pattern}",
            ):
                checkpointer(_Tiny(), strict=True).load(str(path))
        DetrCheckpointer(_Tiny()).load(str(path))  # default: partial loads stay allowed


def test_failing_evaluation_keeps_the_final_checkpoint(tmp_path):
    """Training finishes, the final evaluation crashes on a malformed annotation file: the error
    names the file and model_final.pth stays tagged and loadable."""
    bad_json = tmp_path / "broken_val.json"
    bad_json.write_text("{ this is not json")
    cfg = tmp_path / "bad_eval_config.py"
    cfg.write_text(
        "from detectron2.config import LazyConfig\n"
        "from detectron2.data.datasets import register_coco_instances\n"
        f"register_coco_instances('broken_val', {{}}, {str(bad_json)!r}, {str(tmp_path)!r})\n"
        f"_base = LazyConfig.load({str(TOY_CONFIG)!r})\n"
        "model, dataloader, optimizer, lr_multiplier, train = (_base.model, _base.dataloader,\n"
        "    _base.optimizer, _base.lr_multiplier, _base.train)\n"
        "dataloader.test.dataset.names = 'broken_val'\n"
    )
    out = tmp_path / "out"
    proc = run_train_net(
        "--config-file",
        cfg,
        f"train.output_dir={out}",
        "train.max_iter=2",
        "train.checkpointer.period=100",
        check=False,
    )
    assert proc.returncode != 0
    assert f"cannot load dataset 'broken_val' (annotation file {bad_json})" in proc.stdout
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    state = safe_load_checkpoint(str(out / "model_final.pth"))
    assert state["trainer"]["iteration"] == 1


def test_parts_that_do_not_fit_fail_at_construction():
    """Config mistakes between the model's parts fail when the model is built, naming the
    mismatch, instead of deep in the first forward pass."""
    from detectron2.config import instantiate

    from dino_utils import tiny_cfg

    cases = [
        (
            "model.neck.num_outs",
            5,
            "the neck outputs 5 levels but the transformer has num_feature_levels=4",
        ),
        (
            "model.neck.out_channels",
            32,
            r"the neck outputs \[32\] channels but the "
            r"transformer's embed_dim is \d+",
        ),
        ("model.position_embedding.num_pos_feats", 8, r"num_pos_feats=8 gives 16 channels"),
        ("model.input_format", "RBG", "input_format must be 'RGB' or 'BGR', got 'RBG'"),
    ]
    for key, value, message in cases:
        cfg = tiny_cfg()
        *path, leaf = key.split(".")
        node = cfg
        for part in path:
            node = node[part]
        node[leaf] = value
        with pytest.raises(ValueError, match=message):
            instantiate(cfg.model)


@pytest.mark.parametrize(
    "box, label, problem",
    [
        ([30.0, 10.0, 20.0, 40.0], 1, "inverted"),
        ([10.0, 10.0, 10.0, 40.0], 1, "zero width"),
        ([10.0, 10.0, float("nan"), 40.0], 1, "not finite"),
        ([10.0, 10.0, 20.0, 40.0], 5, "label = num_classes"),
        ([10.0, 10.0, 20.0, 40.0], -1, "negative label"),
    ],
)
def test_bad_ground_truth_reaching_the_model_is_named(box, label, problem):
    """A box with no positive width/height or not finite, or a label outside [0, num_classes),
    that reaches the model (another mapper than DetrDatasetMapper) fails naming the image, its
    file and the box, instead of a negative GIoU loss or an index error in the label embedding."""
    from detectron2.structures import Boxes

    from dino_utils import make_batch, tiny_model

    model = tiny_model(num_classes=5).train()
    batch = make_batch([(64, 64), (64, 64)], [2, 2], 5)
    instances = batch[1]["instances"]
    boxes = instances.gt_boxes.tensor.clone()
    boxes[1] = torch.tensor(box)
    instances.gt_boxes = Boxes(boxes)
    instances.gt_classes[1] = label
    batch[1]["file_name"] = "images/bad.jpg"
    with pytest.raises(
        ValueError,
        match=r"image 1 of the batch \(images/bad\.jpg\): ground-truth "
        r"box .* with label -?\d+: boxes must be finite",
    ):
        model(batch)
    batch[1]["instances"] = instances[:1]
    losses = model(batch)  # the same batch without the bad box trains
    assert torch.isfinite(sum(losses.values()))


@pytest.mark.parametrize("kind", ["missing", "undecodable"])
def test_dataset_without_any_readable_image_is_named(tmp_path, kind):
    """Every image missing or undecodable: one error naming the dataset, not per-image warnings
    and then "Sample larger than population" from the loader."""
    d = tmp_path / "images"
    d.mkdir()
    infos = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 64} for i in (1, 2)]
    if kind == "undecodable":
        for info in infos:
            (d / info["file_name"]).write_bytes(b"not an image")
    name = _register_dataset(tmp_path, d, infos, [_annotation(1, 1), _annotation(2, 2)])
    with pytest.raises(
        RuntimeError, match=f"dataset '{name}': none of its 2 images could be read under {d}.*1.jpg"
    ):
        get_detection_dataset_dicts(name)


def test_one_readable_image_is_enough(tmp_path, image_dir):
    d, infos = image_dir
    name = _register_dataset(
        tmp_path, d, [infos[2], infos[0]], [_annotation(1, 3), _annotation(2, 1)]
    )
    assert len(get_detection_dataset_dicts(name)) == 2


def test_boxes_outside_the_image_are_dropped_at_loading_and_from_the_evaluation(
    tmp_path, image_dir
):
    """A box entirely outside its image is dropped with a warning at loading, like a degenerate
    box, and the COCO evaluator's ground truth leaves out the same annotations."""
    from focus_detr.evaluation import COCOEvaluator

    d, infos = image_dir
    w = infos[0]["width"]
    w2, h2 = infos[1]["width"], infos[1]["height"]
    anns = [
        _annotation(1, 1),
        _annotation(2, 1, (w + 5, 10, 20, 20)),
        _annotation(3, 2, (-40, 10, 30, 20)),
        _annotation(4, 2, (10, 10, 0, 5)),
        _annotation(5, 2, (w2 - 5, h2 - 5, 30, 30)),
    ]  # partly inside: kept
    name = _register_dataset(tmp_path, d, infos[:2], anns)
    with pytest.warns(UserWarning) as record:
        dicts = get_detection_dataset_dicts(name, filter_empty=False)
    messages = [str(r.message) for r in record]
    assert any(
        f"'{name}': dropped 2 annotation(s) with a box entirely outside the image" in m
        for m in messages
    ), messages
    assert any("dropped 1 annotation(s) with a zero, negative" in m for m in messages), messages
    assert [[a["bbox"] for a in x["annotations"]] for x in dicts] == [
        [[5, 5, 20, 20]],
        [[w2 - 5, h2 - 5, 30, 30]],
    ]
    evaluator = COCOEvaluator(
        name, tasks=("bbox",), use_fast_impl=False, output_dir=str(tmp_path / "eval")
    )
    assert sorted(evaluator._coco_api.getAnnIds()) == [1, 5]
    assert sorted(evaluator._coco_api.getAnnIds(imgIds=[2])) == [5]
