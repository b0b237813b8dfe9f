"""Dynamic-size and batched ONNX graphs of the whole detector give eager's detections (matched as
sets with the tolerances of test_deploy_onnx.py) and, for the sparse encoders, eager's keep
counts, which the graph computes from its input's size."""

import numpy as np
import pytest
import torch
from deploy_utils import (
    TINY,
    TINY_BOX_TOL,
    TINY_SCORE_TOL,
    assert_same_sets,
    dataset_image,
    eager,
    tiny_model,
)

pytest.importorskip("onnxruntime", reason="pip install -e '.[deploy]'")
from focus_detr.deploy import ExportableDetector, export_onnx, export_program, load  # noqa: E402

SIZES = ((96, 128), (128, 160))


@pytest.mark.parametrize("name", list(TINY))
def test_one_dynamic_graph_serves_two_sizes(name, tmp_path):
    import onnxruntime as ort

    model = tiny_model(name)
    sparse = name != "dino"
    path = export_onnx(
        model, tmp_path / "dynamic.onnx", SIZES[0], dynamic_shapes=True, with_keep_counts=sparse
    )
    session = ort.InferenceSession(str(path))
    reference = ExportableDetector(model, with_keep_counts=sparse).eval()
    counts = []
    for size in SIZES:
        image = dataset_image(1, size)
        ours = [torch.from_numpy(o) for o in session.run(None, {"image": image.numpy()})]
        with torch.no_grad():
            theirs = reference(image)
        assert_same_sets(ours[:3], theirs[:3], TINY_SCORE_TOL, TINY_BOX_TOL)
        if sparse:
            assert torch.equal(ours[3], theirs[3])
            counts.append(ours[3].tolist())
    if sparse:
        assert counts[0] != counts[1]  # the counts follow the input's size


def test_batch_graph_matches_eager_per_image(tmp_path):
    model = tiny_model("focus_detr")
    path = export_onnx(model, tmp_path / "batch.onnx", SIZES[0], batch=2)
    images = torch.stack([dataset_image(i, SIZES[0]) for i in (1, 2)])
    detector = load(path, threads=1)
    assert detector.input_shape == (2, 3, *SIZES[0])
    results = detector(images)
    assert len(results) == 2
    for image, result in zip(images, results):
        ours = (result.pred_boxes.tensor, result.scores, result.pred_classes)
        assert_same_sets(ours, eager(model, image), TINY_SCORE_TOL, TINY_BOX_TOL)
    with pytest.raises(ValueError, match=r"exported for images of shape \(2, 3, 96, 128\)"):
        detector(images[0])


def test_dynamic_runtime_accepts_any_size(tmp_path):
    model = tiny_model("dino")
    detector = load(export_onnx(model, tmp_path / "d.onnx", SIZES[0], dynamic_shapes=True))
    assert detector.input_shape == (3, None, None)
    image = dataset_image(0, SIZES[1])
    result = detector(image)
    assert result.image_size == SIZES[1]
    ours = (result.pred_boxes.tensor, result.scores, result.pred_classes)
    assert_same_sets(ours, eager(model, image), TINY_SCORE_TOL, TINY_BOX_TOL)
    with pytest.raises(ValueError, match=r"shape \(3, None, None\)"):
        detector(np.zeros((4, 8, 8), dtype=np.uint8))


def test_unsupported_dynamic_requests_are_named(tmp_path):
    model = tiny_model("dino")
    with pytest.raises(ValueError, match="attention='portable' only.*TopK"):
        export_onnx(model, tmp_path / "m.onnx", SIZES[0], dynamic_shapes=True, attention="plugin")
    with pytest.raises(
        ValueError, match="export_program serves one fixed input size.*dynamic_shapes=True"
    ):
        export_program(model, SIZES[0], dynamic_shapes=True)
    with pytest.raises(ValueError, match="batch must be a positive int"):
        export_onnx(model, tmp_path / "m.onnx", SIZES[0], batch=0)
    with pytest.raises(ValueError, match="with_keep_counts needs a sparse encoder"):
        export_onnx(model, tmp_path / "m.onnx", SIZES[0], with_keep_counts=True)
    assert not (tmp_path / "m.onnx").exists()


def test_export_tool_dynamic_batch_graph(tmp_path, capsys):
    import importlib.util
    import subprocess
    import sys

    from conftest import subprocess_env
    from deploy_utils import ROOT

    out = tmp_path / "dynamic.onnx"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools/export_model.py"),
            "--config-file",
            str(ROOT / TINY["focus_detr"]),
            "--input-size",
            "96",
            "128",
            "--dynamic-shapes",
            "--batch",
            "2",
            "--output",
            str(out),
            "--check",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "image (2, 3, H, W)" in run.stdout and "ONNX Runtime vs eager" in run.stdout
    assert load(out).input_shape == (2, 3, None, None)
    spec = importlib.util.spec_from_file_location("export_model", ROOT / "tools/export_model.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    base = ["--config-file", "x.py", "--dynamic-shapes"]
    for extra, message in (
        (["--format", "torch-export"], "--format onnx only"),
        (["--attention", "plugin"], "--attention portable only"),
    ):
        with pytest.raises(SystemExit):
            tool.parse_args(base + extra)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args(["--config-file", "x.py", "--batch", "0"])


def test_openvino_runs_one_dynamic_graph_at_two_sizes(tmp_path):
    pytest.importorskip("openvino", reason="pip install -e '.[deploy]'")
    model = tiny_model("focus_detr")
    path = export_onnx(model, tmp_path / "dynamic.onnx", SIZES[0], dynamic_shapes=True)
    detector = load(path, runtime="openvino", threads=1)
    assert detector.input_shape == (3, None, None)
    for size in SIZES:
        image = dataset_image(1, size)
        result = detector(image)
        assert result.image_size == size
        ours = (result.pred_boxes.tensor, result.scores, result.pred_classes)
        assert_same_sets(ours, eager(model, image), TINY_SCORE_TOL, TINY_BOX_TOL)
