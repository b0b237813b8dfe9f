"""The whole detector exported to ONNX and run by ONNX Runtime gives eager's detections.

Detections are compared as sets (`deploy_utils.set_distance`): every top detection of one side has
a same-class partner on the other within a score and a box tolerance. Tolerances, tiny models:
score 1e-6, box 1e-3 px. Measured on these images: ONNX Runtime vs eager differ by <= 9e-8 in
score and <= 2.3e-5 px in box, and eager float32 vs eager float64 (the float32 rounding itself) by
3e-8 and 3e-5 px, so the tolerances are >= 10x both. The R50 models with the published weights
use the fixture tests' tolerances (score 5e-4, box 0.1 px; see test_dino_fixture.py).
"""

from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig

pytest.importorskip("onnx", reason="pip install -e '.[deploy]'")
pytest.importorskip("onnxruntime", reason="pip install -e '.[deploy]'")
import onnx  # noqa: E402
from deploy_utils import (  # noqa: E402
    R50_BOX_TOL,
    R50_SCORE_TOL,
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
from dino_utils import R50_MODEL  # noqa: E402
from msda_reference import reference_ms_deform_attn  # noqa: E402
from reference_keys import load_synthesized  # noqa: E402

from focus_detr.deploy import export_onnx, load, set_distance  # noqa: E402
from focus_detr.modeling import instantiate_model  # noqa: E402
from focus_detr.layers import MultiScaleDeformableAttention  # noqa: E402
from focus_detr.layers.ms_deform_attn.export_forms import (  # noqa: E402
    PLUGIN_DOMAIN,
    PLUGIN_OP,
    exported_ms_deform_attn,
    exporting,
)

ROOT = Path(__file__).parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def onnx_detections(path, image):
    result = load(path, threads=1)(image)
    return result.pred_boxes.tensor, result.scores, result.pred_classes


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
    out = {}
    for name in TINY:
        model = tiny_model(name)
        out[name] = (model, export_onnx(model, tmp_path_factory.mktemp(name) / "model.onnx", SIZE))
    return out


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_onnx_runtime_matches_eager(tiny_exports, name):
    model, path = tiny_exports[name]
    for index in unambiguous_images(model):
        image = dataset_image(index, SIZE)
        ours, theirs = onnx_detections(path, image), eager(model, image)
        assert ours[0].shape == (model.select_box_nums_for_evaluation, 4)
        assert_same_sets(ours, theirs, TINY_SCORE_TOL, TINY_BOX_TOL)


def test_float_input_graph_matches_uint8(tiny_exports, tmp_path):
    model, uint8_path = tiny_exports["focus_detr"]
    path = export_onnx(model, tmp_path / "float.onnx", SIZE, input_dtype=torch.float32)
    image = dataset_image(2, SIZE)
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert_same_sets(
        onnx_detections(path, image.float()),
        onnx_detections(uint8_path, image),
        TINY_SCORE_TOL,
        TINY_BOX_TOL,
    )


def test_portable_graph_has_only_standard_ops(tiny_exports):
    _, path = tiny_exports["focus_detr"]
    graph = onnx.load(str(path)).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    assert "GridSample" in {node.op_type for node in graph.node}


@pytest.mark.parametrize("name", ["dino", "focus_detr"])
def test_plugin_form_is_tensorrt_node(name, tmp_path):
    """One MultiscaleDeformableAttnPlugin_TRT per deformable attention, with the plugin's five
    inputs: value (N, S, heads, D), int32 spatial shapes and level starts, locations, weights."""
    model = tiny_model(name)
    path = export_onnx(model, tmp_path / "plugin.onnx", SIZE, attention="plugin")
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = proto.graph
    nodes = [n for n in graph.node if n.op_type == PLUGIN_OP]
    attentions = [m for m in model.modules() if isinstance(m, MultiScaleDeformableAttention)]
    assert len(nodes) == len(attentions) > 0
    assert all(
        n.domain == PLUGIN_DOMAIN and len(n.input) == 5 and len(n.output) == 1 for n in nodes
    )
    assert "GridSample" not in {n.op_type for n in graph.node}
    producers = {out: n for n in graph.node for out in n.output}
    for node in nodes:
        for position in (1, 2):  # spatial_shapes, level_start_index: int32, as the plugin reads
            source = producers[node.input[position]]
            if source.op_type == "Cast":
                assert source.attribute[0].i == onnx.TensorProto.INT32
            else:  # folded into a constant by the exporter
                assert source.op_type == "Constant"
                assert source.attribute[0].t.data_type == onnx.TensorProto.INT32
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.value_info}
    attn = attentions[0]
    heads, points = attn.num_heads, attn.num_points
    # (1, S, heads, D) and (1, Q, heads, L, P, 2) where shape inference knows them (0: unknown)
    value = shapes.get(nodes[0].input[0]) or [0] * 4
    assert value[2] in (0, heads) and value[3] in (0, attn.embed_dim // heads)
    locations = shapes.get(nodes[0].input[3]) or [0] * 6
    assert locations[2] in (0, heads) and locations[4] in (0, points) and locations[5] in (0, 2)


def test_plugin_form_eager_equals_portable():
    """The plugin node's eager stand-in computes what the portable graph computes."""
    torch.manual_seed(0)
    shapes = torch.tensor([[6, 8], [3, 4]])
    starts = torch.tensor([0, 48])
    value = torch.randn(2, 60, 4, 8, dtype=torch.float64)
    locations = torch.rand(2, 7, 4, 2, 3, 2, dtype=torch.float64)
    weights = torch.rand(2, 7, 4, 2, 3, dtype=torch.float64).softmax(-1)
    expected = reference_ms_deform_attn(value, shapes, locations, weights)
    for form in ("portable", "plugin"):
        with exporting(form):
            out = exported_ms_deform_attn(value, shapes, starts, locations, weights)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_bad_export_requests_are_named(tmp_path):
    model = tiny_model("dino")
    with pytest.raises(ValueError, match="opset 13 is too old"):
        export_onnx(model, tmp_path / "m.onnx", SIZE, opset=13)
    with pytest.raises(ValueError, match="attention must be one of"):
        export_onnx(model, tmp_path / "m.onnx", SIZE, attention="tensorrt")
    with pytest.raises(ValueError, match="input_dtype"):
        export_onnx(model, tmp_path / "m.onnx", SIZE, input_dtype=torch.float16)
    with pytest.raises(TypeError, match="Linear cannot be exported"):
        export_onnx(torch.nn.Linear(2, 2).eval(), tmp_path / "m.onnx", SIZE)
    with pytest.raises(ValueError, match="eval mode"):
        export_onnx(model.train(), tmp_path / "m.onnx", SIZE)
    assert not (tmp_path / "m.onnx").exists()


def test_runtime_names_wrong_image_shape(tiny_exports, tmp_path):
    _, path = tiny_exports["dino"]
    detector = load(path)
    with pytest.raises(ValueError, match=r"exported for images of shape \(3, 192, 256\)"):
        detector(torch.zeros(3, 100, 100, dtype=torch.uint8))
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load(tmp_path / "missing.onnx")
    # HxWx3 arrays (e.g. from PIL / OpenCV) are accepted as well
    image = dataset_image(0, SIZE)
    a = detector(image)
    b = detector(image.permute(1, 2, 0).numpy())
    assert torch.equal(a.scores, b.scores)


def published_detections(name, ref):
    """(boxes, scores, labels) of the fixture's stored top detections (each fixture's layout)."""
    if name == "dino":
        inst = ref["instances"]
        return inst["boxes"], inst["scores"], inst["classes"].long()
    return ref["det_boxes"], ref["det_scores"], ref["det_classes"].long()


R50 = {
    "dino": (R50_MODEL, "dino_r50_detrex_subset.pt", "dino_r50_detrex_keys.tsv"),
    "focus_detr": (
        str(ROOT / "projects/focus_detr/configs/models/focus_detr_r50.py"),
        "focus_detr_r50_reference.pt",
        "focus_detr_r50_detrex_keys.tsv",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(R50))
def test_r50_published_weights_onnx_reproduce_published_detections(name, tmp_path):
    """The R50 model with the fixture's published (synthesized) weights, exported at the first
    fixture image's size: each of its top 100 detections in ONNX Runtime has a partner among the
    published ones (as test_dino_fixture / test_focus_fixture_equivalence check eager)."""
    config, fixture_file, keys = R50[name]
    fixture = torch.load(FIXTURES / fixture_file, weights_only=True)
    meta = fixture.get("meta", fixture)
    model = instantiate_model(LazyConfig.load(config).model).eval()
    model = load_synthesized(
        model, keys, fixture["aliases"], meta["salt"], meta["constant_rows"], tmp_path
    )
    ref = fixture["images"][0]
    image = ref["image"]
    path = export_onnx(
        model,
        tmp_path / "r50.onnx",
        tuple(image.shape[1:]),
        input_dtype=torch.float32,
        num_detections=100,
    )
    ours = onnx_detections(path, image.float())
    assert set_distance(ours, published_detections(name, ref), R50_SCORE_TOL, R50_BOX_TOL) <= 1


def test_chunked_ffn_exports_whole(tmp_path):
    """The FFN's inference chunking writes through `out=`, which a trace does not record: the
    export takes one product instead (R50-size token counts exceed the chunk)."""
    import onnxruntime as ort

    from focus_detr.layers import FFN

    torch.manual_seed(0)
    ffn = FFN(8, 16, inference_chunk=4).eval()
    x = torch.randn(1, 10, 8)
    path = tmp_path / "ffn.onnx"
    with torch.no_grad():
        expected = ffn(x)
        torch.onnx.export(ffn, (x,), str(path), opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path))
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-5, atol=1e-6)


def test_export_tool_writes_and_checks_graph(tmp_path):
    import subprocess
    import sys

    from conftest import subprocess_env

    out = tmp_path / "tiny.onnx"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools/export_model.py"),
            "--config-file",
            str(ROOT / TINY["focus_detr"]),
            "--input-size",
            "128",
            "160",
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
    assert f"wrote {out}" in run.stdout and "ONNX Runtime vs eager" in run.stdout
    assert load(out).input_shape == (3, 128, 160)
    bad = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools/export_model.py"),
            "--config-file",
            str(ROOT / TINY["dino"]),
            "train.init_checkpoint=x.pth",
            "--output",
            "y.onnx",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert bad.returncode != 0 and "options must come before" in bad.stderr
