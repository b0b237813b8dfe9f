"""The exported detector beyond ONNX Runtime: OpenVINO running the ONNX graph, and torch.export's
ExportedProgram, each giving eager's detections (matched as sets with the tolerances of
test_deploy_onnx.py: tiny models score 1e-6 / box 1e-3 px, R50 with published weights 5e-4 /
0.1 px). Measured on these images: OpenVINO vs eager <= 4e-8 in score and <= 4e-5 px in box, the
ExportedProgram vs eager <= 3.5e-8 and <= 3.5e-5 px, both within the float32 rounding that eager
float32 vs float64 shows.
"""

import pytest
import torch
from deploy_utils import (
    SIZE,
    TINY,
    TINY_BOX_TOL,
    TINY_SCORE_TOL,
    assert_same_sets,
    dataset_image,
    eager,
    tiny_model,
    unambiguous_images,
)

from focus_detr.deploy import (
    detect_resized,
    export_onnx,
    export_program,
    load,
)
from focus_detr.layers.graph_capture import capturing_graph


def detections(result):
    return result.pred_boxes.tensor, result.scores, result.pred_classes


@pytest.fixture(scope="module")
def tiny_models():
    return {name: tiny_model(name) for name in TINY}


@pytest.mark.parametrize("name", list(TINY))
def test_exported_program_matches_eager(tiny_models, name, tmp_path):
    """torch.export of the whole detector (non-strict) runs without Python around it and gives
    eager's detections on two images, also after a save / load round trip."""
    model = tiny_models[name]
    images = [dataset_image(i, SIZE) for i in unambiguous_images(model)]
    program = export_program(model, SIZE)
    path = tmp_path / f"{name}.pt2"
    torch.export.save(program, str(path))
    reloaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        for image in images:
            expected = eager(model, image)
            for module in (program.module(), reloaded):
                ours = module(image)
                assert ours[0].shape == (model.select_box_nums_for_evaluation, 4)
                assert_same_sets(ours, expected, TINY_SCORE_TOL, TINY_BOX_TOL)


def test_exported_program_has_no_data_dependent_guard(tiny_models):
    """No check reads tensor contents in the captured graph: no `item` / `_local_scalar_dense`
    node (a count read back to Python) and no assertion on data."""
    program = export_program(tiny_models["focus_detr"], SIZE)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    data_reads = (
        "aten.item",
        "aten._local_scalar_dense",
        "aten._assert_async",
        "aten._assert_scalar",
        "aten.sym_constrain_range",
    )
    assert not {t for t in targets if t.startswith(data_reads)}, targets


def test_capturing_graph_only_while_capturing():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(capturing_graph())
            return x + 1

    Probe()(torch.ones(1))
    torch.export.export(Probe(), (torch.ones(1),), strict=False)
    assert seen == [False, True]


@pytest.mark.parametrize("name", list(TINY))
def test_openvino_matches_eager(tiny_models, name, tmp_path):
    pytest.importorskip("openvino", reason="pip install -e '.[deploy]'")
    model = tiny_models[name]
    path = export_onnx(model, tmp_path / "model.onnx", SIZE)
    detector = load(path, runtime="openvino", threads=1)
    assert detector.input_shape == (3, *SIZE)
    for index in unambiguous_images(model):
        image = dataset_image(index, SIZE)
        assert_same_sets(
            detections(detector(image)), eager(model, image), TINY_SCORE_TOL, TINY_BOX_TOL
        )
    with pytest.raises(ValueError, match=r"exported for images of shape \(3, 192, 256\)"):
        detector(torch.zeros(3, 64, 64, dtype=torch.uint8))


def test_unknown_runtime_and_missing_file_are_named(tmp_path):
    with pytest.raises(ValueError, match="runtime must be one of .*'tensorrt'"):
        load(tmp_path / "m.onnx", runtime="tensorrt")
    pytest.importorskip("openvino", reason="pip install -e '.[deploy]'")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load(tmp_path / "missing.onnx", runtime="openvino")


def test_export_program_rejects_bad_requests(tiny_models):
    model = tiny_models["dino"]
    with pytest.raises(ValueError, match="attention must be one of"):
        export_program(model, SIZE, attention="tensorrt")
    with pytest.raises(ValueError, match="input_size must be"):
        export_program(model, (0, 256))
    with pytest.raises(TypeError, match="Linear cannot be exported"):
        export_program(torch.nn.Linear(2, 2).eval(), SIZE)


def test_too_small_input_is_named_at_export(tiny_models):
    """A graph serving too few tokens for the query budget fails at export, naming the budget."""
    model = tiny_models["dino"]
    with pytest.raises(ValueError, match="too small for the query budget"):
        export_program(model, (32, 32))


def test_static_keep_counts_equal_the_tensor_counts():
    """The Python-side counts a captured graph uses equal the float32 tensor arithmetic of eager
    for every token count an export can meet (unpadded images)."""
    from focus_detr.modeling.focus.foreground_token_selector import ForegroundTokenSelector
    from focus_detr.modeling.sparse.attention_map import (
        sparse_keep_counts,
        static_sparse_keep_count,
    )

    selector = ForegroundTokenSelector(embed_dim=8)
    for s in list(range(1, 400)) + [20_000, 20_001, 21_437]:
        mask = torch.zeros(1, s, dtype=torch.bool)
        assert selector.static_keep_counts(s) == tuple(selector.keep_counts(mask)[2][0].tolist())
        for ratio in (0.1, 0.3):
            assert static_sparse_keep_count(s, ratio) == int(sparse_keep_counts(mask, ratio)[0])


def test_detect_resized_scales_boxes_to_the_output_size(tiny_models, tmp_path):
    """An image already at the graph's size, reported for an output twice as large: the same
    detections with every box coordinate doubled; another input size is resized to the graph's."""
    model = tiny_models["focus_detr"]
    detector = load(export_onnx(model, tmp_path / "m.onnx", SIZE), threads=1)
    image = dataset_image(0, SIZE)
    direct = detector(image)
    scaled = detect_resized(detector, image, 2 * SIZE[0], 2 * SIZE[1])
    assert scaled.image_size == (2 * SIZE[0], 2 * SIZE[1])
    torch.testing.assert_close(scaled.pred_boxes.tensor, 2 * direct.pred_boxes.tensor)
    assert torch.equal(scaled.scores, direct.scores)
    other = detect_resized(detector, dataset_image(0, (96, 128)), 96, 128)
    assert other.image_size == (96, 128) and len(other) == len(direct)
    assert float(other.pred_boxes.tensor.max()) <= 128
