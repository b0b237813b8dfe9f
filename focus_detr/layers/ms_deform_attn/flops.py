"""FLOP count of the deformable-attention op for fvcore's jit-based `FlopCountAnalysis`.

Convention (fvcore counts one fused multiply-add as one flop): every sampled point costs
4 multiply-adds per channel for the bilinear combination of its four corners, plus 1 per channel
for the attention weighting, i.e. ``5 * N * Q * heads * levels * points * head_dim``. Corner
coordinates and bilinear coefficients (per point, not per channel) are not counted.

Usage::

    flops = FlopCountAnalysis(model, inputs)
    flops.set_op_handle(**MSDA_FLOP_HANDLES)

`MSDA_FLOP_HANDLES` names this project's op, the raw op of ``torch-ms-deform-attn`` and detrex's
autograd Function, so models calling any of them are counted the same way.
"""

from typing import Any, List

__all__ = ["MSDA_FLOP_HANDLES", "ms_deform_attn_flops", "ms_deform_attn_flop_jit"]

MACS_PER_CHANNEL = 4 + 1  # bilinear corners + attention weight


def ms_deform_attn_flops(
    batch: int, num_queries: int, num_heads: int, num_levels: int, num_points: int, head_dim: int
) -> int:
    """Analytic count (multiply-adds) of one call; see the module docstring."""
    return MACS_PER_CHANNEL * batch * num_queries * num_heads * num_levels * num_points * head_dim


def _shape(val) -> List[int]:
    if not val.isCompleteTensor():
        return []
    return val.type().sizes()


def ms_deform_attn_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle. The inputs (jit values) hold value (N, S, heads, head_dim) and
    sampling_locations (N, Q, heads, levels, points, 2) as the first 4-d and the first 6-d tensor
    (true of all three op signatures in `MSDA_FLOP_HANDLES`)."""
    shapes = [_shape(v) for v in inputs]
    value = next((s for s in shapes if len(s) == 4), None)
    locations = next((s for s in shapes if len(s) == 6), None)
    if value is None or locations is None:
        raise ValueError(
            "deformable-attention FLOP handle: no (N, S, heads, head_dim) value and "
            f"(N, Q, heads, levels, points, 2) locations among input shapes {shapes}"
        )
    n, _, heads, head_dim = value
    _, q, _, levels, points, _ = locations
    return ms_deform_attn_flops(n, q, heads, levels, points, head_dim)


MSDA_FLOP_HANDLES = {
    "focus_detr::ms_deform_attn": ms_deform_attn_flop_jit,
    "torch_ms_deform_attn::forward": ms_deform_attn_flop_jit,
    "prim::PythonOp.MultiScaleDeformableAttnFunction": ms_deform_attn_flop_jit,  # detrex
}
