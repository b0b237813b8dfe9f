"""Run an exported detector: `load("model.onnx")` returns a callable that takes an image (3, H, W)
tensor or HxWx3 array and returns detectron2 `Instances`, with ONNX Runtime (default) or OpenVINO
(`runtime="openvino"`), both optional (`pip install -e '.[deploy]'`)."""

import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from .precision import check_precision, openvino_hint, quantize_int8

__all__ = [
    "RUNTIMES",
    "ExportedDetector",
    "OnnxDetector",
    "OpenVinoDetector",
    "load",
    "detect_resized",
]

RUNTIMES = ("onnxruntime", "openvino")


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(
            f"running an exported model with {module} needs it installed: "
            "pip install -e '.[deploy]'"
        ) from None


class ExportedDetector:
    """What the runtimes share: the image checks and the `Instances` result.

    Subclasses set `input_shape` ((3, H, W), or (N, 3, H, W) for a batch graph; None at a
    dynamic side) and `input_dtype` and implement `run(array)`. A batch graph's detector takes
    (N, 3, H, W) and returns one `Instances` per image."""

    input_shape: Tuple[int, ...]
    input_dtype: type

    def run(self, array: np.ndarray) -> Sequence[np.ndarray]:
        """(3, H, W) array of `input_dtype` -> (boxes (K, 4), scores (K,), labels (K,))
        (a batch graph: one more leading dimension everywhere)."""
        raise NotImplementedError

    def __call__(self, image):
        array = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.ndim == 3 and array.shape[-1] == 3 and array.shape[0] != 3:
            array = array.transpose(2, 0, 1)  # HxWx3 -> 3xHxW
        expected = self.input_shape
        if array.ndim != len(expected) or any(
            e is not None and e != a for e, a in zip(expected, array.shape)
        ):
            layout = "(N, 3, H, W)" if len(expected) == 4 else "(3, H, W)"
            raise ValueError(
                f"this graph was exported for images of shape {expected} {layout} "
                f"(None: any size), got {tuple(array.shape)}; resize the image or "
                "export for its size"
            )
        boxes, scores, labels = self.run(np.ascontiguousarray(array, dtype=self.input_dtype))[:3]
        if len(expected) == 4:
            return [_instances(array.shape[-2:], *found) for found in zip(boxes, scores, labels)]
        return _instances(array.shape[-2:], boxes, scores, labels)


def _instances(image_size, boxes, scores, labels) -> Instances:
    result = Instances(tuple(int(v) for v in image_size))
    result.pred_boxes = Boxes(torch.from_numpy(np.asarray(boxes)))
    result.scores = torch.from_numpy(np.asarray(scores))
    result.pred_classes = torch.from_numpy(np.asarray(labels)).long()
    return result


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    return path


class OnnxDetector(ExportedDetector):
    """An exported detector in an ONNX Runtime session.

    Args:
        path: the .onnx file written by `export_onnx`.
        providers: ONNX Runtime execution providers; default CUDA when available, then CPU.
        threads: intra-op threads (0: ONNX Runtime's default).
    """

    def __init__(self, path, providers: Optional[Sequence[str]] = None, threads: int = 0):
        ort = _require("onnxruntime")
        path = _existing(path)
        available = ort.get_available_providers()
        chosen = (
            list(providers)
            if providers
            else [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=chosen)
        (self.input,) = self.session.get_inputs()
        # dynamic sides are named (str) or unknown in the session: None
        self.input_shape = tuple(d if isinstance(d, int) else None for d in self.input.shape)
        self.input_dtype = np.uint8 if self.input.type == "tensor(uint8)" else np.float32

    def run(self, array):
        return self.session.run(None, {self.input.name: array})


class OpenVinoDetector(ExportedDetector):
    """An exported detector compiled by OpenVINO (which reads the ONNX file directly).

    Args:
        path: the .onnx file written by `export_onnx` (portable attention).
        device: OpenVINO device, default "CPU".
        threads: inference threads (0: OpenVINO's default).
        precision: "fp32" (default: as exported), or "bf16" / "fp16" as OpenVINO's inference
            precision hint where the device lists it (a ValueError names the device's
            capabilities otherwise; see `focus_detr.deploy.precision`).
    """

    def __init__(self, path, device: str = "CPU", threads: int = 0, precision: str = "fp32"):
        ov = _require("openvino")
        path = _existing(path)
        config = {"INFERENCE_PRECISION_HINT": openvino_hint(precision, device)}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(path), device, config)
        (parameter,) = self.compiled.inputs
        self.input_shape = tuple(
            d.get_length() if d.is_static else None for d in parameter.get_partial_shape()
        )
        self.input_dtype = np.uint8 if parameter.get_element_type() == ov.Type.u8 else np.float32
        self.request = self.compiled.create_infer_request()

    def run(self, array):
        outputs = self.request.infer([array])
        return [outputs[o] for o in self.compiled.outputs]


def load(
    path, runtime: str = "onnxruntime", threads: int = 0, precision: str = "fp32", **options
) -> ExportedDetector:
    """The exported detector at `path` in `runtime` ("onnxruntime" or "openvino").

    Args:
        threads: CPU threads (0: the runtime's default).
        precision: "fp32" (as exported); ONNX Runtime: "int8" (the graph quantized on loading by
            `quantize_int8`, dynamic mode; quantize once yourself to keep the file); OpenVINO:
            "bf16" / "fp16" where the device offers them. Others are errors naming the offer.
        options: the runtime's own arguments (`OnnxDetector`'s providers; `OpenVinoDetector`'s
            device, precision).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    precision = check_precision(runtime, precision)
    if runtime == "openvino":
        return OpenVinoDetector(path, threads=threads, precision=precision, **options)
    if precision == "int8":
        path = _existing(path)
        with tempfile.TemporaryDirectory() as tmp:  # the session reads the file when built
            quantized = quantize_int8(path, Path(tmp) / f"{path.stem}.int8.onnx")
            return OnnxDetector(quantized, threads=threads, **options)
    return OnnxDetector(path, threads=threads, **options)


def detect_resized(
    detector: ExportedDetector, image: torch.Tensor, height: int, width: int
) -> Instances:
    """Detections of a fixed-size exported graph on an image of another size: `image` (3, h, w)
    (the model's input format, e.g. after the config's test resize) is resized bilinearly to the
    graph's input size, and the boxes are scaled to an output image of `height` x `width` (the
    original file's size), as detectron2's postprocessing does for the eager model. The resize
    changes the aspect ratio where the sizes' ratios differ; export at the size you serve to
    avoid it."""
    if len(detector.input_shape) != 3:
        raise ValueError(
            f"detect_resized takes a one-image graph (3, H, W), this one takes "
            f"{detector.input_shape}; call the detector with the batch instead"
        )
    _, graph_h, graph_w = detector.input_shape
    if graph_h is None or graph_w is None:  # a dynamic-size graph serves the image as it is
        graph_h, graph_w = image.shape[-2:]
    x = image[None].float()
    if tuple(x.shape[-2:]) != (graph_h, graph_w):
        x = torch.nn.functional.interpolate(
            x, size=(graph_h, graph_w), mode="bilinear", align_corners=False
        )
    if detector.input_dtype == np.uint8:
        x = x.round().clamp(0, 255).to(torch.uint8)
    found = detector(x[0])
    scale = torch.tensor([width / graph_w, height / graph_h] * 2, dtype=torch.float32)
    result = Instances((height, width))
    result.pred_boxes = Boxes(found.pred_boxes.tensor.float() * scale)
    result.scores = found.scores
    result.pred_classes = found.pred_classes
    return result
