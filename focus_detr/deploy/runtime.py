"""Run an exported detector with ONNX Runtime: `load("model.onnx")` returns a callable that takes
an image (3, H, W) tensor or HxWx3 array and returns detectron2 `Instances`."""
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from detectron2.structures import Boxes, Instances

__all__ = ["OnnxDetector", "load"]


class OnnxDetector:
    """An exported detector in an ONNX Runtime session.

    Args:
        path: the .onnx file written by `export_onnx`.
        providers: ONNX Runtime execution providers; default CUDA when available, then CPU.
        threads: intra-op threads (0: ONNX Runtime's default).
    """

    def __init__(self, path, providers: Optional[Sequence[str]] = None, threads: int = 0):
        try:
            import onnxruntime as ort  # optional: pip install -e .[deploy]
        except ImportError:
            raise ImportError("running an exported model needs onnxruntime: "
                              "pip install -e '.[deploy]'") from None
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"exported model not found: {path}")
        available = ort.get_available_providers()
        chosen = list(providers) if providers else [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=chosen)
        (self.input,) = self.session.get_inputs()
        self.input_shape = tuple(self.input.shape)
        self.input_dtype = np.uint8 if self.input.type == "tensor(uint8)" else np.float32

    def __call__(self, image) -> Instances:
        array = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.ndim == 3 and array.shape[-1] == 3 and array.shape[0] != 3:
            array = array.transpose(2, 0, 1)  # HxWx3 -> 3xHxW
        if tuple(array.shape) != self.input_shape:
            raise ValueError(f"this graph was exported for images of shape {self.input_shape} "
                             f"(3, H, W), got {tuple(array.shape)}; resize the image or export "
                             "for its size")
        boxes, scores, labels = self.session.run(
            None, {self.input.name: np.ascontiguousarray(array, dtype=self.input_dtype)})
        result = Instances(self.input_shape[1:])
        result.pred_boxes = Boxes(torch.from_numpy(boxes))
        result.scores = torch.from_numpy(scores)
        result.pred_classes = torch.from_numpy(labels).long()
        return result


def load(path, providers: Optional[Sequence[str]] = None, threads: int = 0) -> OnnxDetector:
    """`OnnxDetector(path, providers, threads)`."""
    return OnnxDetector(path, providers, threads)
