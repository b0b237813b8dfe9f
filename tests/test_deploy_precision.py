"""Reduced precision of the exported tiny Focus-DETR: int8 graphs for ONNX Runtime (dynamic and
static quantization), OpenVINO's bf16 hint where the CPU lists it, and the errors for requests a
runtime or device does not offer. With random weights the detections of a reduced-precision
graph are not compared to eager (near-tied scores reorder); the tests check that the graph is
quantized and runs with the right outputs. The accuracy cost is measured on trained weights by
tools/benchmark_export.py."""

import pytest
import torch
from deploy_utils import SIZE, dataset_image, tiny_model

from focus_detr.deploy import export_onnx, load, quantize_int8
from focus_detr.deploy.precision import check_precision, openvino_hint

pytest.importorskip("onnxruntime", reason="pip install -e '.[deploy]'")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("precision") / "focus.onnx"
    return export_onnx(tiny_model("focus_detr"), path, SIZE)


def op_types(path):
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_dynamic_int8_quantizes_the_products_and_runs(exported, tmp_path):
    out = quantize_int8(exported, tmp_path / "int8.onnx")
    ops = op_types(out)
    assert {"ConvInteger", "MatMulInteger"} <= ops and "Conv" not in ops, ops
    assert out.stat().st_size < 0.5 * exported.stat().st_size  # int8 weights
    detector = load(out, threads=1)
    result = detector(dataset_image(0, SIZE))
    assert len(result) == tiny_model("focus_detr").select_box_nums_for_evaluation
    assert bool(torch.isfinite(result.scores).all())


def test_load_int8_quantizes_on_loading(exported, tmp_path):
    """precision="int8" runs the graph quantize_int8 writes: the same detections, unlike fp32."""
    image = dataset_image(0, SIZE)
    on_loading = load(exported, threads=1, precision="int8")(image)
    written = load(quantize_int8(exported, tmp_path / "int8.onnx"), threads=1)(image)
    fp32 = load(exported, threads=1)(image)
    assert torch.equal(on_loading.scores, written.scores)
    assert not torch.equal(on_loading.scores, fp32.scores)


def test_static_int8_needs_calibration_images_and_writes_qdq(exported, tmp_path):
    with pytest.raises(ValueError, match="needs calibration_images"):
        quantize_int8(exported, tmp_path / "s.onnx", mode="static")
    with pytest.raises(ValueError, match="int8 mode must be one of"):
        quantize_int8(exported, tmp_path / "s.onnx", mode="weights")
    images = [dataset_image(i, SIZE).numpy() for i in range(2)]
    out = quantize_int8(exported, tmp_path / "s.onnx", mode="static", calibration_images=images)
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types(out)
    assert bool(torch.isfinite(load(out, threads=1)(dataset_image(0, SIZE)).scores).all())


def test_unoffered_precisions_are_named(exported, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"onnxruntime offers precisions \('fp32', 'int8'\), "
        r"got 'bf16'; bf16 is offered by \['eager', 'openvino'\]",
    ):
        load(exported, precision="bf16")
    with pytest.raises(ValueError, match="openvino offers precisions .* got 'int8'"):
        check_precision("openvino", "int8")
    assert check_precision("openvino", "float16") == "fp16"
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx")


class _Core:
    def __init__(self, capabilities):
        self.capabilities = capabilities

    def get_property(self, device, key):
        assert key == "OPTIMIZATION_CAPABILITIES"
        return self.capabilities


def test_openvino_bf16_is_refused_on_a_cpu_without_it():
    with pytest.raises(
        ValueError, match="bf16 is not supported on this CPU: .*'FP32'.*without BF16"
    ):
        openvino_hint("bf16", core=_Core(["FP32", "INT8"]))
    assert openvino_hint("bf16", core=_Core(["FP32", "BF16"])) == "bf16"
    assert openvino_hint("fp32", core=_Core(["FP32"])) == "f32"


def test_openvino_bf16_runs_where_the_cpu_lists_it(exported):
    pytest.importorskip("openvino", reason="pip install -e '.[deploy]'")
    from focus_detr.deploy.precision import openvino_capabilities

    if "BF16" not in openvino_capabilities():
        pytest.skip("this CPU has no bf16 (OpenVINO's OPTIMIZATION_CAPABILITIES)")
    detector = load(exported, runtime="openvino", threads=1, precision="bf16")
    assert "bfloat16" in str(detector.compiled.get_property("INFERENCE_PRECISION_HINT"))
    assert bool(torch.isfinite(detector(dataset_image(0, SIZE)).scores).all())
