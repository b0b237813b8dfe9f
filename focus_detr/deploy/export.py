"""The whole detector as one exportable module, and its ONNX and torch.export exports.

`ExportableDetector(model)` maps one image tensor (3, H, W), uint8 or float in the model's input
format, to its top detections: pixel normalisation, backbone, neck, encoder (dense, Sparse or
Focus), two-stage selection, decoder and the top-k over queries x classes all run inside, so the
exported graph needs no Python around it. The export captures the model at one input size: the
token counts the selection derives from that size are fixed in the graph, so a graph serves that
size (export again for another), unless exported with `dynamic_shapes=True`, which computes
those counts, the level shapes and the top-k sizes in the graph from the input. While capturing,
the model takes its branch-free paths (`focus_detr.layers.graph_capture`): no check that reads tensor contents enters the graph.
"""

import contextlib
import warnings
from pathlib import Path
from typing import Optional, Tuple

import torch
from detectron2.structures import ImageList
from torch import nn

from ..layers import box_cxcywh_to_xyxy
from ..layers.graph_capture import capturing_dynamic_shapes, dynamic_shape_capture
from ..layers.ms_deform_attn.export_forms import ATTENTION_FORMS, exporting

__all__ = ["ExportableDetector", "export_onnx", "export_program", "OUTPUT_NAMES", "MIN_OPSET"]

OUTPUT_NAMES = ("boxes", "scores", "labels")
# GridSample (bilinear, zeros padding, align_corners=0) entered ONNX at opset 16
MIN_OPSET = 16


class ExportableDetector(nn.Module):
    """image (3, H, W) -> boxes (K, 4) xyxy in input pixels (clipped to the image), scores (K,),
    labels (K,) int64,
    K = `num_detections` (default the model's `select_box_nums_for_evaluation`), by score.
    A batch (N, 3, H, W) of same-size images gives boxes (N, K, 4), scores (N, K), labels (N, K).

    Args:
        model: a `DINO` / `FocusDETR` in eval mode (its inference transforms already applied).
        num_detections: detections returned (at most queries x classes).
        with_keep_counts: also return `keep_counts`, the tokens each encoder layer kept
            ((num_layers,), or (N, num_layers) for a batch; int64), for a sparse encoder (Focus,
            Sparse DETR): what a dynamic-size graph computes from its input's size.
    """

    def __init__(
        self, model: nn.Module, num_detections: Optional[int] = None, with_keep_counts: bool = False
    ):
        super().__init__()
        for name in ("compute_outputs", "pixel_mean", "pixel_std"):
            if not hasattr(model, name):
                raise TypeError(
                    f"{type(model).__name__} cannot be exported: it has no {name} "
                    "(export a DINO or FocusDETR)"
                )
        self.model = model
        self.num_detections = int(num_detections or model.select_box_nums_for_evaluation)
        self.with_keep_counts = with_keep_counts

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        batched = image.dim() == 4
        images = image if batched else image[None]
        n = images.shape[0]
        if capturing_dynamic_shapes():  # the graph's sizes, computed per input
            h, w = images.shape[-2], images.shape[-1]
            scale = torch.stack([w, h, w, h]).to(self.model.pixel_mean.dtype)
        else:
            h, w = int(images.shape[-2]), int(images.shape[-1])
            scale = torch.tensor([w, h, w, h], dtype=self.model.pixel_mean.dtype)
        x = (images.to(self.model.pixel_mean.dtype) - self.model.pixel_mean) / self.model.pixel_std
        outputs = self.model.compute_outputs(ImageList(x, [(h, w)] * n))
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        q, k = logits.shape[1:]
        scores, index = logits.sigmoid().flatten(1).topk(min(self.num_detections, q * k), dim=1)
        query, labels = index // k, index % k
        boxes = box_cxcywh_to_xyxy(torch.gather(boxes, 1, query[..., None].expand(-1, -1, 4)))
        scale = scale.to(boxes.device)
        # clipped to the image, as detectron2's postprocessing does
        boxes = torch.minimum((boxes * scale).clamp(min=0), scale)
        result = (boxes, scores, labels)
        if self.with_keep_counts:
            result = result + (self._keep_counts(outputs),)
        return result if batched else tuple(t[0] for t in result)

    @staticmethod
    def _keep_counts(outputs) -> torch.Tensor:
        selection = getattr(outputs.get("encoder_output"), "selection", None)
        if selection is None:
            raise ValueError(
                "with_keep_counts needs a sparse encoder (Focus-DETR, Sparse DETR); "
                "this model's encoder updates every token"
            )
        return torch.stack([valid.sum(1) for valid in selection.kept_valid], 1)


def export_onnx(
    model: nn.Module,
    path,
    input_size: Tuple[int, int],
    *,
    opset: int = 17,
    attention: str = "portable",
    input_dtype: torch.dtype = torch.uint8,
    num_detections: Optional[int] = None,
    dynamic_shapes: bool = False,
    batch: Optional[int] = None,
    with_keep_counts: bool = False,
) -> Path:
    """Export `model` (eval mode, on CPU) for images of `input_size` (H, W) to `path`.

    Args:
        attention: "portable" (standard ops) or "plugin" (one TensorRT plugin node per
            deformable attention; see `focus_detr.layers.ms_deform_attn.export_forms`).
        input_dtype: the graph input's dtype: uint8 (0..255) or float32.
        dynamic_shapes: the graph's image height and width are dynamic ("height", "width"):
            level shapes, keep counts and top-k sizes are computed in the graph from the input's
            size; `input_size` is the size it is traced at. Portable attention only.
        batch: None: the graph takes one image (3, H, W); N: a batch (N, 3, H, W) of same-size
            images, giving boxes (N, K, 4), scores (N, K), labels (N, K).
        with_keep_counts: a fourth output `keep_counts`, the tokens each encoder layer kept
            (Focus-DETR / Sparse DETR), for checking a dynamic-size graph.
    Returns:
        the written path.
    """
    if opset < MIN_OPSET:
        raise ValueError(
            f"opset {opset} is too old for the exported graph (GridSample needs >= {MIN_OPSET})"
        )
    if dynamic_shapes and attention == "plugin":
        raise ValueError(
            "dynamic_shapes=True works with attention='portable' only: in a dynamic graph the "
            "cascade's TopK k is computed from the input size, and TensorRT's ONNX parser takes "
            "TopK's k only as a constant; export the plugin form once per input size "
            "(dynamic_shapes=False), or use the portable form for dynamic sizes"
        )
    detector, example = _prepare(
        model, input_size, attention, input_dtype, num_detections, batch, with_keep_counts
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs = list(OUTPUT_NAMES) + (["keep_counts"] if with_keep_counts else [])
    dynamic_axes = None
    if dynamic_shapes:
        dynamic_axes = {"image": {example.dim() - 2: "height", example.dim() - 1: "width"}}
    capture = dynamic_shape_capture() if dynamic_shapes else contextlib.nullcontext()
    with torch.no_grad(), exporting(attention), capture, warnings.catch_warnings():
        # tracing fixes the size-derived counts for this input size, as documented (with
        # dynamic shapes they are graph values; the warnings then concern fixed facts only)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            detector,
            (example,),
            str(path),
            opset_version=opset,
            dynamo=False,
            input_names=["image"],
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            custom_opsets={"trt": 1} if attention == "plugin" else None,
        )
    return path


def export_program(
    model: nn.Module,
    input_size: Tuple[int, int],
    *,
    attention: str = "portable",
    input_dtype: torch.dtype = torch.uint8,
    num_detections: Optional[int] = None,
    batch: Optional[int] = None,
    dynamic_shapes: bool = False,
) -> "torch.export.ExportedProgram":
    """`model` (eval mode) as a `torch.export.ExportedProgram` for images of `input_size` (H, W):
    the same module and outputs as `export_onnx`'s graph; save it with `torch.export.save`,
    run it with `program.module()(image)`.

    Args: as `export_onnx`; `dynamic_shapes=True` is refused (see the error).
    """
    if dynamic_shapes:
        raise ValueError(
            "export_program serves one fixed input size: under torch.export the level shapes "
            "and keep counts would be symbolic sizes, which the model's level loops and top-k "
            "widths do not support yet; use export_onnx(..., dynamic_shapes=True) "
            "(tools/export_model.py --format onnx --dynamic-shapes) for one graph of any size, "
            "or export a program per input size"
        )
    detector, example = _prepare(model, input_size, attention, input_dtype, num_detections, batch)
    with torch.no_grad(), exporting(attention):
        return torch.export.export(detector, (example,), strict=False)


def _prepare(
    model: nn.Module,
    input_size: Tuple[int, int],
    attention: str,
    input_dtype: torch.dtype,
    num_detections: Optional[int],
    batch: Optional[int] = None,
    with_keep_counts: bool = False,
):
    """The checks both exports share; (ExportableDetector, example image)."""
    if attention not in ATTENTION_FORMS:
        raise ValueError(f"attention must be one of {ATTENTION_FORMS}, got {attention!r}")
    if input_dtype not in (torch.uint8, torch.float32):
        raise ValueError(f"input_dtype must be torch.uint8 or torch.float32, got {input_dtype}")
    if len(input_size) != 2 or min(int(v) for v in input_size) <= 0:
        raise ValueError(f"input_size must be (H, W) with positive sides, got {tuple(input_size)}")
    if getattr(model, "training", False):
        raise ValueError("export a model in eval mode (model.eval())")
    if batch is not None and (isinstance(batch, bool) or int(batch) != batch or batch < 1):
        raise ValueError(
            f"batch must be a positive int (images per graph call) or None (one "
            f"image (3, H, W)), got {batch!r}"
        )
    detector = ExportableDetector(model, num_detections).eval()
    if with_keep_counts:
        if not _has_sparse_encoder(model):
            raise ValueError(
                f"with_keep_counts needs a sparse encoder (Focus-DETR, Sparse DETR); "
                f"{type(model.transformer.encoder).__name__} updates every token"
            )
        detector.with_keep_counts = True
    h, w = (int(v) for v in input_size)
    shape = (3, h, w) if batch is None else (int(batch), 3, h, w)
    return detector, torch.zeros(shape, dtype=input_dtype)


def _has_sparse_encoder(model: nn.Module) -> bool:
    encoder = getattr(getattr(model, "transformer", None), "encoder", None)
    return hasattr(encoder, "selector") or hasattr(encoder, "keep_ratio")
