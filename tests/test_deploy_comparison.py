"""Eager PyTorch and the exported runtimes side by side (focus_detr.deploy.comparison, used by
tools/benchmark_export.py and tools/benchmark.py --runtimes): every requested runtime and
precision is timed on the same image, the float32 graph's detections agree with eager's, and bad
requests are named."""

import pytest
import torch
from deploy_utils import SIZE, dataset_image, tiny_model, unambiguous_images

pytest.importorskip("onnxruntime", reason="pip install -e '.[deploy]'")
from focus_detr.deploy.comparison import compare_runtimes, offered_precisions  # noqa: E402
from tests.tools_utils import load_tool  # noqa: E402

FOCUS_TINY = "projects/focus_detr/configs/focus_detr_tiny_synthetic.py"


def test_compare_runtimes_times_each_runtime_and_checks_detections():
    model = tiny_model("focus_detr")
    image = dataset_image(unambiguous_images(model, count=1)[0], SIZE).float()
    comparison = compare_runtimes(
        model, image, ["fp32", "int8"], ("eager", "onnxruntime"), threads=1, rounds=1
    )
    assert set(comparison.timings) == {"eager fp32", "onnxruntime fp32", "onnxruntime int8"}
    assert all(t["min_s"] > 0 for t in comparison.timings.values())
    # the float32 graph gives eager's detections; int8 is only reported
    assert comparison.distances["onnxruntime fp32"] <= 1
    table = comparison.table(multiply_adds=1e9, rate=1e10)
    assert "eager fp32" in table and "speed-up 1.00x" in table and "the float32 floor" in table
    assert "onnxruntime fp32" in table and "detections agree" in table


def test_bad_runtime_or_precision_requests_are_named():
    assert offered_precisions(["fp32", "bf16"], ["eager", "onnxruntime"]) == {
        "eager": ["fp32", "bf16"],
        "onnxruntime": ["fp32"],
    }
    with pytest.raises(ValueError, match=r"precisions \['fp64'\] are offered by none"):
        offered_precisions(["fp64"], ["eager", "onnxruntime"])
    with pytest.raises(ValueError, match=r"unknown runtimes \['tensorrt'\]"):
        compare_runtimes(tiny_model("dino"), torch.zeros(3, *SIZE), runtimes=("tensorrt",))


def test_benchmark_tool_times_the_runtimes_beside_eager(capsys):
    tool = load_tool("benchmark")
    argv = ["--config-file", FOCUS_TINY, "--input-size", "96", "128", "--runs", "1"]
    tool.main(
        argv
        + [
            "--warmup",
            "0",
            "--no-flops",
            "--no-breakdown",
            "--device",
            "cpu",
            "--runtimes",
            "onnxruntime",
        ]
    )
    out = capsys.readouterr().out
    assert "eager vs exported runtimes, 96x128" in out
    assert "eager fp32" in out and "onnxruntime fp32" in out
    with pytest.raises(SystemExit):
        tool.parse_args(argv + ["--dataset-inputs", "2", "--runtimes", "openvino"])
    assert "--runtimes times the exported graphs on CPU" in capsys.readouterr().err
