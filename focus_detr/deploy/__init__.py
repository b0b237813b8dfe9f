"""Deployment: the whole detector exported to ONNX (`export_onnx`) and run by ONNX Runtime
(`load`), image tensor in, boxes / scores / labels out."""
from .export import ExportableDetector, export_onnx
from .runtime import OnnxDetector, load

__all__ = ["ExportableDetector", "OnnxDetector", "export_onnx", "load"]
