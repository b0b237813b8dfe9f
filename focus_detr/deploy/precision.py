"""Reduced precision of the exported detector: which runtime offers which, int8 quantization of an
exported ONNX graph for ONNX Runtime, and the check of OpenVINO's precision hint against what
the device can compute.

Precision names are shared by the runtimes: "fp32" (as exported), "bf16", "fp16", "int8".
- ONNX Runtime (CPU): fp32, int8 (`quantize_int8`: weights int8, activations quantized per call
  by dynamic quantization, or from calibration images by static quantization).
- OpenVINO: fp32, and bf16 / fp16 as its inference precision hint where the device's
  `OPTIMIZATION_CAPABILITIES` list them (OpenVINO then runs matrix products and convolutions in
  that precision and keeps precision-sensitive ops in float32).
- eager PyTorch: fp32, bf16 (`focus_detr.modeling.optimize(reduced_precision="bfloat16")`).
"""

import tempfile
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "PRECISIONS",
    "INT8_MODES",
    "check_precision",
    "openvino_capabilities",
    "openvino_hint",
    "quantize_int8",
]

PRECISIONS: Dict[str, Tuple[str, ...]] = {
    "eager": ("fp32", "bf16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "fp16"),
}
INT8_MODES = ("dynamic", "static")
# precision -> (OpenVINO's hint value, the capability the device must list)
_OPENVINO_HINTS = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16")}
_ALIASES = {"f32": "fp32", "float32": "fp32", "f16": "fp16", "float16": "fp16", "bfloat16": "bf16"}


def check_precision(runtime: str, precision: str) -> str:
    """`precision`'s shared name (aliases such as "float32", "f16" accepted) when `runtime`
    offers it; a ValueError naming what it offers otherwise."""
    if runtime not in PRECISIONS:
        raise ValueError(f"runtime must be one of {tuple(PRECISIONS)}, got {runtime!r}")
    name = _ALIASES.get(str(precision).lower(), str(precision).lower())
    if name not in PRECISIONS[runtime]:
        offered = [r for r, names in PRECISIONS.items() if name in names]
        elsewhere = f"; {name} is offered by {offered}" if offered else ""
        raise ValueError(
            f"{runtime} offers precisions {PRECISIONS[runtime]}, got {precision!r}{elsewhere}"
        )
    return name


def openvino_capabilities(device: str = "CPU", core=None) -> Tuple[str, ...]:
    """The device's `OPTIMIZATION_CAPABILITIES` (e.g. ("FP32", "BF16", "INT8", ...))."""
    if core is None:
        import openvino

        core = openvino.Core()
    return tuple(str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES"))


def openvino_hint(precision: str, device: str = "CPU", core=None) -> str:
    """OpenVINO's INFERENCE_PRECISION_HINT value for `precision` on `device`.

    Raises:
        ValueError: OpenVINO offers no such precision, or the device cannot compute it (e.g.
            bf16 on a CPU without AVX512_BF16 / AMX), naming the device's capabilities.
    """
    name = check_precision("openvino", precision)
    hint, capability = _OPENVINO_HINTS[name]
    capabilities = openvino_capabilities(device, core)
    if name != "fp32" and capability not in capabilities:
        raise ValueError(
            f"{name} is not supported on this {device}: OpenVINO lists its "
            f"capabilities as {list(capabilities)}, without {capability}; use "
            "precision='fp32' (or int8 with ONNX Runtime)"
        )
    return hint


def quantize_int8(
    onnx_path,
    out_path,
    mode: str = "dynamic",
    calibration_images: Optional[Iterable[np.ndarray]] = None,
    op_types: Optional[Sequence[str]] = None,
) -> Path:
    """Write an int8 version of the exported float graph at `onnx_path` to `out_path`.

    Args:
        mode: "dynamic": weights int8, activations quantized to uint8 per call from their
            observed range (ConvInteger / MatMulInteger), no calibration; "static": weights and
            activations int8 with scales fixed from `calibration_images` (QDQ nodes, which ONNX
            Runtime fuses into QLinearConv / QLinearMatMul).
        calibration_images: static mode only: (3, H, W) arrays of the graph's input dtype and
            shape, e.g. a few dataset images at the graph's size.
        op_types: the op types quantized (default: Conv and MatMul, the products).
    Returns:
        `out_path`.
    """
    from onnxruntime import quantization as q

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"exported model not found: {onnx_path}")
    if mode not in INT8_MODES:
        raise ValueError(f"int8 mode must be one of {INT8_MODES}, got {mode!r}")
    ops = list(op_types) if op_types else ["Conv", "MatMul"]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "dynamic":
        if calibration_images is not None:
            raise ValueError(
                "calibration_images are for mode='static'; dynamic quantization "
                "observes each call's activations"
            )
        # uint8 weights for convolutions: ONNX Runtime's CPU ConvInteger has no int8-weight
        # kernel; the matrix products take int8 weights
        with tempfile.TemporaryDirectory() as tmp:
            staged = onnx_path
            conv = [t for t in ops if t == "Conv"]
            rest = [t for t in ops if t != "Conv"]
            if rest:
                staged = Path(tmp) / "products.onnx"
                q.quantize_dynamic(
                    onnx_path, staged, op_types_to_quantize=rest, weight_type=q.QuantType.QInt8
                )
            if conv:
                q.quantize_dynamic(
                    staged, out_path, op_types_to_quantize=conv, weight_type=q.QuantType.QUInt8
                )
            elif staged != onnx_path:
                Path(staged).replace(out_path)
        return out_path
    images = list(calibration_images or [])
    if not images:
        raise ValueError(
            "static int8 quantization needs calibration_images: a few (3, H, W) "
            "images of the graph's input size"
        )
    q.quantize_static(
        onnx_path,
        out_path,
        _calibration_reader(onnx_path, images),
        quant_format=q.QuantFormat.QDQ,
        op_types_to_quantize=ops,
        activation_type=q.QuantType.QInt8,
        weight_type=q.QuantType.QInt8,
        calibrate_method=q.CalibrationMethod.MinMax,
    )
    return out_path


def _calibration_reader(onnx_path, images: Sequence[np.ndarray]):
    """onnxruntime's calibration reader over `images` (its base class lives in the optional
    runtime, so the class is made when quantizing)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader

    name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: np.ascontiguousarray(i)} for i in images])

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            return next(self.items, None)

    return Reader()
