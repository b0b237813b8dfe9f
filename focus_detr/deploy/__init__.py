"""Deployment: the whole detector exported to ONNX (`export_onnx`) and run by ONNX Runtime
(`load`), image tensor in, boxes / scores / labels out."""
from .compare import set_distance
from .export import ExportableDetector, export_onnx
from .runtime import OnnxDetector, load
from .timing import interleaved_timings

__all__ = ["ExportableDetector", "OnnxDetector", "export_onnx", "interleaved_timings", "load",
           "set_distance"]
