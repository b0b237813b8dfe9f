"""COCO AP of an exported detector beside eager's (tools/evaluate_export.py): the exported graph
wrapped as a detectron2 model gives eager's detections in the original files' pixels, and the
evaluation scores both on the same images."""

import pytest
import torch
from deploy_utils import TINY, TINY_BOX_TOL, TINY_SCORE_TOL, assert_same_sets, proposal_order_margin

from focus_detr.analysis import build_model, dataset_inputs, load_config

pytest.importorskip("onnxruntime", reason="pip install -e '.[deploy]'")
from focus_detr.deploy import ExportedModel, evaluate_detectors, export_onnx, load  # noqa: E402
from focus_detr.deploy.accuracy import box_evaluator_config  # noqa: E402


def _triple(instances):
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def test_exported_model_gives_eager_detections_and_the_same_ap(tmp_path):
    cfg = load_config(TINY["focus_detr"], [])
    torch.manual_seed(0)
    model = build_model(cfg, "cpu").eval()
    inputs = dataset_inputs(cfg, 6)
    # images whose two-stage proposals are well separated (test_deploy_onnx: near-ties make
    # eager float32 itself ambiguous)
    inputs = [x for x in inputs if proposal_order_margin(model, x["image"]) > 1e-5][:2]
    assert len(inputs) == 2 and inputs[0]["image"].shape != inputs[1]["image"].shape
    assert (inputs[0]["height"], inputs[0]["width"]) != tuple(inputs[0]["image"].shape[-2:])
    path = export_onnx(
        model, tmp_path / "m.onnx", tuple(inputs[0]["image"].shape[-2:]), dynamic_shapes=True
    )
    exported = ExportedModel(load(path))
    with torch.no_grad():  # one image per call, as evaluation runs (no padding)
        theirs = [model([x])[0] for x in inputs]
    ours = exported(inputs)
    for x, a, b in zip(inputs, ours, theirs):
        # boxes in the original file's pixels, as detectron2's postprocessing gives them; the
        # tolerance in input pixels grows with the scale to the file
        assert a["instances"].image_size == b["instances"].image_size == (x["height"], x["width"])
        scale = max(x["height"] / x["image"].shape[-2], x["width"] / x["image"].shape[-1])
        assert_same_sets(
            _triple(a["instances"]), _triple(b["instances"]), TINY_SCORE_TOL, TINY_BOX_TOL * scale
        )
    results = evaluate_detectors(cfg, {"eager": model, "onnxruntime": exported}, max_images=3)
    assert set(results) == {"eager", "onnxruntime"}
    ap = {name: r["bbox"]["AP"] for name, r in results.items()}
    assert ap["eager"] == pytest.approx(ap["onnxruntime"], abs=0.05), ap


def test_box_evaluator_config_takes_the_coco_part_and_refuses_bad_counts():
    cfg = load_config(TINY["focus_detr"], [])
    assert "TokenSelection" not in str(box_evaluator_config(cfg.dataloader.evaluator)["_target_"])
    with pytest.raises(ValueError, match="max_images must be >= 1"):
        evaluate_detectors(cfg, {}, max_images=0)


def test_ap_of_a_subset_is_scored_on_the_images_evaluated_only(monkeypatch):
    # detectron2's COCOEvaluator scores the whole dataset unless given image ids: the images
    # left out would count as missed
    from focus_detr.evaluation import COCOEvaluator

    cfg = load_config(TINY["focus_detr"], [])
    scored = []

    def evaluate(self, img_ids=None):
        scored.append(img_ids)
        return {"bbox": {"AP": 0.0}}

    monkeypatch.setattr(COCOEvaluator, "evaluate", evaluate)
    model = torch.nn.Module()
    model.forward = lambda batch: [{"instances": None} for _ in batch]
    monkeypatch.setattr(COCOEvaluator, "process", lambda self, inputs, outputs: None)
    evaluate_detectors(cfg, {"m": model}, max_images=3)
    evaluate_detectors(cfg, {"m": model})
    first = [x["image_id"] for x in dataset_inputs(cfg, 3)]
    assert scored == [first, None]
