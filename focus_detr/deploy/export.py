"""The whole detector as one exportable module, and its ONNX and torch.export exports.

`ExportableDetector(model)` maps one image tensor (3, H, W), uint8 or float in the model's input
format, to its top detections: pixel normalisation, backbone, neck, encoder (dense, Sparse or
Focus), two-stage selection, decoder and the top-k over queries x classes all run inside, so the
exported graph needs no Python around it. The export captures the model at one input size: the
token counts the selection derives from that size are fixed in the graph, so a graph serves that
size (export again for another). While capturing, the model takes its branch-free paths
(`focus_detr.layers.graph_capture`): no check that reads tensor contents enters the graph.
"""
import warnings
from pathlib import Path
from typing import Optional, Tuple

import torch
from detectron2.structures import ImageList
from torch import nn

from ..layers import box_cxcywh_to_xyxy
from ..layers.ms_deform_attn.export_forms import ATTENTION_FORMS, exporting

__all__ = ["ExportableDetector", "export_onnx", "export_program", "OUTPUT_NAMES", "MIN_OPSET"]

OUTPUT_NAMES = ("boxes", "scores", "labels")
# GridSample (bilinear, zeros padding, align_corners=0) entered ONNX at opset 16
MIN_OPSET = 16


class ExportableDetector(nn.Module):
    """image (3, H, W) -> boxes (K, 4) xyxy in input pixels (clipped to the image), scores (K,),
    labels (K,) int64,
    K = `num_detections` (default the model's `select_box_nums_for_evaluation`), by score.

    Args:
        model: a `DINO` / `FocusDETR` in eval mode (its inference transforms already applied).
        num_detections: detections returned (at most queries x classes).
    """

    def __init__(self, model: nn.Module, num_detections: Optional[int] = None):
        super().__init__()
        for name in ("compute_outputs", "pixel_mean", "pixel_std"):
            if not hasattr(model, name):
                raise TypeError(f"{type(model).__name__} cannot be exported: it has no {name} "
                                "(export a DINO or FocusDETR)")
        self.model = model
        self.num_detections = int(num_detections or model.select_box_nums_for_evaluation)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = int(image.shape[-2]), int(image.shape[-1])
        x = (image.to(self.model.pixel_mean.dtype) - self.model.pixel_mean) / self.model.pixel_std
        outputs = self.model.compute_outputs(ImageList(x[None], [(h, w)]))
        logits, boxes = outputs["pred_logits"][0], outputs["pred_boxes"][0]
        q, k = logits.shape
        scores, index = logits.sigmoid().flatten().topk(min(self.num_detections, q * k))
        query, labels = index // k, index % k
        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        # clipped to the image, as detectron2's postprocessing does
        boxes = torch.minimum((box_cxcywh_to_xyxy(boxes[query]) * scale).clamp(min=0), scale)
        return boxes, scores, labels


def export_onnx(model: nn.Module, path, input_size: Tuple[int, int], *, opset: int = 17,
                attention: str = "portable", input_dtype: torch.dtype = torch.uint8,
                num_detections: Optional[int] = None) -> Path:
    """Export `model` (eval mode, on CPU) for images of `input_size` (H, W) to `path`.

    Args:
        attention: "portable" (standard ops) or "plugin" (one TensorRT plugin node per
            deformable attention; see `focus_detr.layers.ms_deform_attn.export_forms`).
        input_dtype: the graph input's dtype: uint8 (0..255) or float32.
    Returns:
        the written path.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old for the exported graph (GridSample needs "
                         f">= {MIN_OPSET})")
    detector, example = _prepare(model, input_size, attention, input_dtype, num_detections)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), exporting(attention), warnings.catch_warnings():
        # tracing fixes the size-derived counts for this input size, as documented
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(detector, (example,), str(path), opset_version=opset, dynamo=False,
                          input_names=["image"], output_names=list(OUTPUT_NAMES),
                          custom_opsets={"trt": 1} if attention == "plugin" else None)
    return path


def export_program(model: nn.Module, input_size: Tuple[int, int], *,
                   attention: str = "portable", input_dtype: torch.dtype = torch.uint8,
                   num_detections: Optional[int] = None) -> "torch.export.ExportedProgram":
    """`model` (eval mode) as a `torch.export.ExportedProgram` for images of `input_size` (H, W):
    the same module and outputs as `export_onnx`'s graph; save it with `torch.export.save`,
    run it with `program.module()(image)`.

    Args: as `export_onnx`.
    """
    detector, example = _prepare(model, input_size, attention, input_dtype, num_detections)
    with torch.no_grad(), exporting(attention):
        return torch.export.export(detector, (example,), strict=False)


def _prepare(model: nn.Module, input_size: Tuple[int, int], attention: str,
             input_dtype: torch.dtype, num_detections: Optional[int]):
    """The checks both exports share; (ExportableDetector, example image)."""
    if attention not in ATTENTION_FORMS:
        raise ValueError(f"attention must be one of {ATTENTION_FORMS}, got {attention!r}")
    if input_dtype not in (torch.uint8, torch.float32):
        raise ValueError(f"input_dtype must be torch.uint8 or torch.float32, got {input_dtype}")
    if len(input_size) != 2 or min(int(v) for v in input_size) <= 0:
        raise ValueError(f"input_size must be (H, W) with positive sides, got {tuple(input_size)}")
    if getattr(model, "training", False):
        raise ValueError("export a model in eval mode (model.eval())")
    detector = ExportableDetector(model, num_detections).eval()
    h, w = (int(v) for v in input_size)
    return detector, torch.zeros(3, h, w, dtype=input_dtype)
