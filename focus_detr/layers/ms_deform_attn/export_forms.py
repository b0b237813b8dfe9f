"""Deformable attention in an exported graph, in the two forms `export_model` offers:

- "portable": standard ops only (one GridSample per level over the heads folded into the batch,
  a weighted sum), runs on any ONNX runtime;
- "plugin": one node ``MultiscaleDeformableAttnPlugin_TRT`` with TensorRT's plugin inputs and
  layout (value (N, S, heads, D), spatial_shapes (L, 2) int32, level_start_index (L,) int32,
  sampling_locations (N, Q, heads, L, P, 2), attention_weights (N, Q, heads, L, P)) and output
  (N, Q, heads, D) (reshaped to (N, Q, heads * D) after it), for TensorRT users who load that
  plugin.

`exporting(form)` routes `focus_detr.layers.ms_deform_attn` to the chosen form while a model is
exported (the attention backends are not consulted, so no CPU kernel enters the graph).
"""

import contextlib
import threading

import torch
import torch.nn.functional as F

from ..graph_capture import level_shapes

__all__ = [
    "ATTENTION_FORMS",
    "PLUGIN_OP",
    "PLUGIN_DOMAIN",
    "exporting",
    "export_form",
    "exported_ms_deform_attn",
    "portable_ms_deform_attn",
]

ATTENTION_FORMS = ("portable", "plugin")
PLUGIN_OP = "MultiscaleDeformableAttnPlugin_TRT"
PLUGIN_DOMAIN = "trt"
_state = threading.local()


def export_form():
    """The attention form of the export in progress, or None."""
    return getattr(_state, "form", None)


@contextlib.contextmanager
def exporting(form: str):
    if form not in ATTENTION_FORMS:
        raise ValueError(
            f"unknown deformable-attention form {form!r}; choose one of {ATTENTION_FORMS}"
        )
    previous, _state.form = export_form(), form
    try:
        yield
    finally:
        _state.form = previous


def portable_ms_deform_attn(value, spatial_shapes, sampling_locations, attention_weights):
    """Standard-op deformable attention; arguments as `focus_detr.layers.ms_deform_attn`, with
    `spatial_shapes` as python (H, W) pairs (static in the graph)."""
    n, _, heads, d = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    grids = (
        (2 * sampling_locations - 1).permute(0, 2, 1, 3, 4, 5).flatten(0, 1)
    )  # (N*h, Q, L, P, 2)
    samples, start = [], 0
    for lvl, (h, w) in enumerate(spatial_shapes):
        level = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(n * heads, d, h, w)
        samples.append(
            F.grid_sample(
                level, grids[:, :, lvl], mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )  # (N*h, D, Q, P)
        start += h * w
    stacked = torch.stack(samples, -2).flatten(-2)  # (N*h, D, Q, L*P)
    weights = attention_weights.permute(0, 2, 1, 3, 4).reshape(n * heads, 1, q, levels * points)
    out = (stacked * weights).sum(-1)  # (N*h, D, Q)
    return out.view(n, heads * d, q).transpose(1, 2)


class _PluginNode(torch.autograd.Function):
    """Runs the portable form eagerly; exports as one TensorRT plugin node."""

    @staticmethod
    def forward(
        ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    ):
        # read from the tensor: the ONNX tracer must see the node's inputs used
        shapes = [tuple(int(v) for v in hw) for hw in spatial_shapes.tolist()]
        out = portable_ms_deform_attn(value, shapes, sampling_locations, attention_weights)
        return out.view(*out.shape[:2], value.shape[2], value.shape[3])  # the plugin's layout

    @staticmethod
    def symbolic(
        g, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    ):
        int32 = torch.onnx.TensorProtoDataType.INT32
        return g.op(
            f"{PLUGIN_DOMAIN}::{PLUGIN_OP}",
            value,
            g.op("Cast", spatial_shapes, to_i=int32),
            g.op("Cast", level_start_index, to_i=int32),
            sampling_locations,
            attention_weights,
        )


def exported_ms_deform_attn(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights
):
    """The form of the export in progress (see the module docstring)."""
    if export_form() == "plugin":
        return _PluginNode.apply(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        ).flatten(2)
    shapes = level_shapes(spatial_shapes)
    return portable_ms_deform_attn(value, shapes, sampling_locations, attention_weights)
