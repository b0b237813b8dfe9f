"""Deployment: the whole detector exported to ONNX (`export_onnx`) or as a torch.export program
(`export_program`), and run by ONNX Runtime or OpenVINO (`load`), image tensor in, boxes / scores /
labels out."""

from .accuracy import ExportedModel, evaluate_detectors
from .compare import set_distance
from .export import ExportableDetector, export_onnx, export_program
from .runtime import (
    RUNTIMES,
    ExportedDetector,
    OnnxDetector,
    OpenVinoDetector,
    detect_resized,
    load,
)
from .precision import PRECISIONS, quantize_int8
from .timing import interleaved_timings

__all__ = [
    "ExportedModel",
    "evaluate_detectors",
    "PRECISIONS",
    "quantize_int8",
    "RUNTIMES",
    "ExportableDetector",
    "ExportedDetector",
    "OnnxDetector",
    "OpenVinoDetector",
    "detect_resized",
    "export_onnx",
    "export_program",
    "interleaved_timings",
    "load",
    "set_distance",
]
