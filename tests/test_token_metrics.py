"""Token-selection quality: precision/recall against hand-made examples, the evaluator, and the
eval-time selection recorder on the tiny models."""

import math

import pytest
import torch
from detectron2.structures import Boxes, Instances

from focus_detr.analysis import record_token_selection, synthetic_inputs
from focus_detr.evaluation import (
    TokenSelectionEvaluator,
    foreground_labels,
    level_of_tokens,
    selection_counts,
)
from focus_detr.modeling.focus import PUBLISHED_SCALE_RANGES, ForegroundLabelAssigner, pad_boxes
from focus_detr.modeling.transformer import TokenSelection
from tests.tools_utils import DENSE, FOCUS, SMALL_INPUT, SPARSE, tiny_model

NAN = float("nan")
DINO_TINY = "projects/dino/configs/dino_tiny_synthetic.py"


def _same(a, b):
    return all((math.isnan(x) and math.isnan(y)) or x == pytest.approx(y) for x, y in zip(a, b))


def test_selection_counts_hand_made_example():
    # two levels: 2x2 (tokens 0..3) and 1x2 (tokens 4, 5); token 3 is padding
    shapes = torch.tensor([[2, 2], [1, 2]])
    level = level_of_tokens(shapes)
    assert level.tolist() == [0, 0, 0, 0, 1, 1]
    valid = torch.tensor([1, 1, 1, 0, 1, 1], dtype=torch.bool)
    kept = torch.tensor([1, 1, 0, 1, 1, 0], dtype=torch.bool)  # the padded token 3 is ignored
    fg = torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool)
    c = selection_counts(kept, fg, valid, level, 2)
    assert c.kept.tolist() == [2, 1]
    assert c.foreground.tolist() == [2, 0]
    assert c.true_positive.tolist() == [1, 0]
    assert c.valid.tolist() == [3, 2]
    assert _same(c.precision(), [0.5, 0.0])
    assert _same(c.recall(), [0.5, NAN])
    summary = c.summary("layer0_")  # for JSON: null where undefined, with the reason
    assert summary["layer0_level1_recall"] is None
    assert summary["layer0_undefined"] == {
        "layer0_level1_recall": "no foreground token at level 1 (label assignment)"
    }
    assert summary["layer0_level0_recall"] == pytest.approx(0.5)
    o = c.overall()
    assert o["precision"] == pytest.approx(1 / 3) and o["recall"] == pytest.approx(1 / 2)
    assert o["keep_fraction"] == pytest.approx(3 / 5)
    assert o["foreground_fraction"] == pytest.approx(2 / 5)
    total = c + c
    assert total.kept.tolist() == [4, 2] and total.overall()["precision"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="differ in shape"):
        selection_counts(kept[:5], fg, valid, level, 2)


def _hand_selection():
    """A 32x32 input with two levels, strides 8 (4x4 tokens) and 16 (2x2 tokens)."""
    kept = [torch.tensor([[0, 1, 2, 16, 17]]), torch.tensor([[0, 16]])]
    objects = [torch.tensor([[1]])]
    return TokenSelection(
        scores=torch.zeros(1, 20),
        kept_index=kept,
        kept_valid=[torch.ones_like(k, dtype=torch.bool) for k in kept],
        padding_mask=torch.zeros(1, 20, dtype=torch.bool),
        spatial_shapes=torch.tensor([[4, 4], [2, 2]]),
        level_start_index=torch.tensor([0, 16]),
        object_index=objects,
        object_valid=[torch.ones_like(o, dtype=torch.bool) for o in objects],
        strides=[8, 16],
    )


ASSIGNER = ForegroundLabelAssigner(strides=(8, 16), scale_ranges=((-1.0, 64.0), (64.0, 1e9)))


def test_foreground_labels_of_a_hand_made_box():
    # box (0, 0)-(16, 16): the stride-8 token centres (4|12, 4|12) lie inside, their largest
    # distance to a side (12) is in level 0's range; the stride-16 centre (8, 8) is inside but
    # its size measure (8) is not in level 1's range (64, inf)
    fg = foreground_labels(_hand_selection(), torch.tensor([[0.0, 0.0, 16.0, 16.0]]), ASSIGNER)
    assert torch.nonzero(fg).flatten().tolist() == [0, 1, 4, 5]


def test_evaluator_on_a_hand_made_example():
    evaluator = TokenSelectionEvaluator(assigner=ASSIGNER)
    evaluator.reset()
    gt = Instances((32, 32))
    gt.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    inputs = [{"image": torch.zeros(3, 32, 32, dtype=torch.uint8), "instances": gt}]
    evaluator.process(inputs, [{"token_selection": _hand_selection()}])
    evaluator.process(inputs, [{"instances": None}])  # a dense model's output: counted as missing
    r = evaluator.evaluate()["token_selection"]
    # layer 0 keeps 0, 1, 2 (level 0) and 16, 17 (level 1); foreground: 0, 1, 4, 5
    assert r["precision"] == pytest.approx(100 * 2 / 5)
    assert r["recall"] == pytest.approx(100 * 2 / 4)
    assert r["level0_precision"] == pytest.approx(100 * 2 / 3)
    assert r["level0_recall"] == pytest.approx(100 * 2 / 4)
    # level 1 has no foreground token: its recall is left out (metrics are numbers, never NaN)
    assert r["level1_precision"] == 0.0 and "level1_recall" not in r
    assert not any(math.isnan(v) for v in r.values())
    assert r["keep_fraction"] == pytest.approx(100 * 5 / 20)
    assert r["foreground_fraction"] == pytest.approx(100 * 4 / 20)
    assert r["layer1_precision"] == pytest.approx(100 * 1 / 2)  # tokens 0 (fg) and 16
    assert r["layer1_recall"] == pytest.approx(100 * 1 / 4)
    assert r["object0_precision"] == pytest.approx(100.0)  # token 1
    assert r["object0_recall"] == pytest.approx(100 * 1 / 4)


def test_evaluator_strides_must_match_the_assigner():
    evaluator = TokenSelectionEvaluator(assigner=ForegroundLabelAssigner())
    gt = Instances((32, 32))
    gt.gt_boxes = Boxes(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="strides"):
        evaluator.process(
            [{"image": torch.zeros(3, 32, 32), "instances": gt}],
            [{"token_selection": _hand_selection()}],
        )


def test_evaluator_without_ground_truth_source_is_an_error():
    evaluator = TokenSelectionEvaluator(assigner=ASSIGNER)
    with pytest.raises(ValueError, match="dataset_name"):
        evaluator.process(
            [{"image": torch.zeros(3, 32, 32)}], [{"token_selection": _hand_selection()}]
        )


@pytest.mark.parametrize("encoder", [FOCUS, SPARSE])
def test_recorded_selection_matches_the_encoder(encoder):
    _, model = tiny_model(encoder)
    model.return_token_selection = False  # the config records; the context manager must
    x = synthetic_inputs(*SMALL_INPUT)[0]
    with record_token_selection(model), torch.no_grad():
        out = model([x])[0]
    assert "instances" in out
    sel = out["token_selection"]
    assert isinstance(sel, TokenSelection) and sel.padding_mask.shape[0] == 1
    s = int((sel.spatial_shapes[:, 0] * sel.spatial_shapes[:, 1]).sum())
    assert s == 12 * 16 + 6 * 8 + 3 * 4 + 2 * 2 and bool(sel.valid_tokens().all())
    kept_index = [index[0] for index in sel.kept_index]
    counts = [int(i.numel()) for i in kept_index]
    assert sel.counts()[0].tolist() == counts
    if encoder == FOCUS:  # cascade (1.0, 0.5) at keep ratio 0.3: 0.4 / 0.2 of the tokens
        selector = model.transformer.encoder.selector
        _, _, keep = selector.keep_counts(torch.zeros(1, s, dtype=torch.bool))
        assert counts == keep[0].tolist()
        assert len(sel.object_index) == len(counts)
        for kept, objects in zip(kept_index, sel.object_index):
            assert set(objects[0].tolist()) <= set(kept.tolist())
    else:  # one selection, int(valid * 0.3) + 1 tokens, in every layer
        assert counts == [int(s * 0.3) + 1] * len(counts)
    for kept in kept_index:
        assert len(set(kept.tolist())) == kept.numel()
    with torch.no_grad():  # flag restored: plain outputs again
        assert "token_selection" not in model([x])[0]
    model.return_token_selection = True  # ... and a flag that was on stays on
    with record_token_selection(model):
        pass
    assert model.return_token_selection is True


def test_dense_model_records_nothing():
    _, model = tiny_model(DENSE)
    with record_token_selection(model), torch.no_grad():
        out = model(synthetic_inputs(*SMALL_INPUT))[0]
    assert "token_selection" not in out


def test_evaluator_config_line_with_coco_ap_on_dataset_images(tmp_path):
    """The config line proposed for the projects' configs: COCO AP and token selection in one
    DatasetEvaluators, the ground truth read from the dataset (the test mapper drops it)."""
    from detectron2.config import instantiate
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset

    from focus_detr.analysis import dataset_inputs, load_config
    from focus_detr.evaluation import GroundTruthBoxes, with_token_selection

    cfg, model = tiny_model(FOCUS)
    cfg.dataloader.evaluator = load_config(DINO_TINY).dataloader.evaluator  # plain COCOEvaluator
    cfg.dataloader.evaluator.output_dir = str(tmp_path)  # COCOEvaluator writes its results
    cfg.dataloader.evaluator = with_token_selection(cfg.dataloader.evaluator)
    # the line is idempotent: configs importing a config that has it may repeat it
    assert with_token_selection(cfg.dataloader.evaluator) is cfg.dataloader.evaluator
    evaluator = instantiate(cfg.dataloader.evaluator)
    coco, selection = evaluator._evaluators
    assert isinstance(coco, COCOEvaluator) and coco._metadata.name == "synthetic_shapes_val"
    assert selection._dataset_name == "synthetic_shapes_val"
    inputs = dataset_inputs(cfg, 3)
    # ground truth scaled like the image: the resize factors of each input
    gt = GroundTruthBoxes("synthetic_shapes_val")
    record = gt.record(inputs[0])
    raw = torch.tensor([a["bbox"] for a in record["annotations"]], dtype=torch.float32)
    h, w = inputs[0]["image"].shape[-2:]
    sx, sy = w / record["width"], h / record["height"]
    expected = torch.stack(
        [
            raw[:, 0] * sx,
            raw[:, 1] * sy,
            (raw[:, 0] + raw[:, 2]) * sx,
            (raw[:, 1] + raw[:, 3]) * sy,
        ],
        1,
    )  # XYWH_ABS -> xyxy, scaled
    torch.testing.assert_close(gt.boxes_xyxy(inputs[0]), expected)
    with record_token_selection(model):
        results = inference_on_dataset(model, [[x] for x in inputs], evaluator)
    assert "AP" in results["bbox"]
    sel = results["token_selection"]
    assert sel["keep_fraction"] == pytest.approx(40.0, abs=1.0)  # layer 0 of cascade (1, .5)
    assert 0.0 <= sel["recall"] <= 100.0 and 0.0 <= sel["precision"] <= 100.0
    assert {"layer0_recall", "layer1_recall", "object0_recall", "object1_recall"} <= set(sel)


@pytest.mark.parametrize(
    "config",
    [
        "projects/focus_detr/configs/focus_detr_tiny_synthetic.py",
        "projects/focus_detr/configs/focus_detr_r50_4scale_36ep.py",
        "projects/sparse_detr/configs/dino_sparse_tiny_synthetic.py",
        "projects/sparse_detr/configs/dino_sparse_r50_4scale_36ep.py",
    ],
)
def test_selecting_configs_log_selection_quality_beside_coco_ap(config, tmp_path):
    from detectron2.config import instantiate

    from focus_detr.engine.config import load_config
    from focus_detr.evaluation import COCOEvaluator  # the data configs' evaluator

    cfg = load_config(config, [f"train.output_dir={tmp_path}"])
    assert cfg.model.return_token_selection is True
    coco, selection = cfg.dataloader.evaluator.evaluators
    assert coco._target_ is COCOEvaluator and selection._target_ is TokenSelectionEvaluator
    # the COCO results follow a command-line output_dir, as train_net's outputs do
    assert coco.output_dir == str(tmp_path)
    if "tiny" in config:
        evaluator = instantiate(cfg.dataloader.evaluator)
        assert [type(e) for e in evaluator._evaluators] == [COCOEvaluator, TokenSelectionEvaluator]


@pytest.mark.parametrize(
    "config, model_key",
    [
        (
            "projects/focus_detr/configs/focus_detr_tiny_synthetic.py",
            "model.transformer.encoder.foreground_loss.assigner.range_scale",
        ),
    ],
)
def test_tiny_configs_label_ranges_are_scaled_and_the_evaluator_follows(config, model_key):
    from detectron2.config import instantiate

    from focus_detr.analysis import load_config
    from projects.dino.configs.dino_tiny_synthetic import LABEL_RANGE_SCALE

    def assigners(cfg):
        evaluator = instantiate(cfg.dataloader.evaluator)._evaluators[1]._assigner
        model = instantiate(cfg.model)
        encoder = model.transformer.encoder
        if model_key.split(".")[3] == "choices":  # the sparse config: build the Focus choice
            cfg.model.transformer.encoder.name = "focus"
            encoder = instantiate(cfg.model).transformer.encoder
        return evaluator.scale_ranges, encoder.foreground_loss.assigner.scale_ranges

    scaled = tuple(
        (lo * LABEL_RANGE_SCALE if lo > 0 else lo, hi * LABEL_RANGE_SCALE)
        for lo, hi in PUBLISHED_SCALE_RANGES
    )
    assert assigners(load_config(config)) == (scaled, scaled)
    # one knob: the published ranges back, for the model's loss and the evaluator alike
    restored = assigners(load_config(config, [f"{model_key}=1.0"]))
    assert restored == (PUBLISHED_SCALE_RANGES, PUBLISHED_SCALE_RANGES)


def test_foreground_per_level_counts_each_level_of_hand_made_images():
    from focus_detr.evaluation import foreground_per_level

    # a 64 x 64 image: levels of 8x8, 4x4, 2x2, 1x1 tokens; the box (10, 20, 50, 40) makes 10
    # level-0 foreground tokens under the published ranges (the hand count of
    # test_focus_label_assignment); an image without boxes adds tokens only
    images = [((64, 64), torch.tensor([[10.0, 20.0, 50.0, 40.0]])), ((64, 64), torch.zeros(0, 4))]
    counts = foreground_per_level(images, ForegroundLabelAssigner())
    assert counts == {"foreground": [10, 0, 0, 0], "tokens": [128, 32, 8, 2], "images": 2}
    # scaled by 0.25 ((-1, 16], (16, 32], ...): the tokens 16-20 px from a side move to level 1
    scaled = foreground_per_level(images, ForegroundLabelAssigner(range_scale=0.25))
    labels = ForegroundLabelAssigner(range_scale=0.25)(
        *pad_boxes([images[0][1]]), [(8, 8), (4, 4), (2, 2), (1, 1)]
    )[0]
    assert scaled["foreground"] == [int(p.sum()) for p in labels.split([64, 16, 4, 1])]
    assert scaled["foreground"][1] > 0


def test_label_statistics_tool_prints_each_range_scale(capsys):
    import importlib.util

    from tests.tools_utils import REPO_ROOT

    spec = importlib.util.spec_from_file_location(
        "label_statistics", REPO_ROOT / "tools" / "label_statistics.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(
        [
            "--config-file",
            "projects/focus_detr/configs/focus_detr_tiny_synthetic.py",
            "--range-scales",
            "0.35",
            "1",
            "--images",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert "3 test images" in out
    assert "0.35 | (-1, 22.4] (22.4, 44.8] (44.8, 89.6] (89.6, inf] |" in out
    assert "1 | (-1, 64] (64, 128] (128, 256] (256, inf] |" in out
