"""The deformable-attention op as one dispatcher op, ``focus_detr::ms_deform_attn``.

Every backend runs behind the same `torch.library` custom op (its backward is the op
``focus_detr::ms_deform_attn_backward``), so that:
- autograd is wired once for all backends (each provides forward and backward functions);
- a jit trace (fvcore's `FlopCountAnalysis`) shows one named node whatever the backend, which
  `MSDA_FLOP_HANDLES` counts; torch.compile sees an opaque op with a fake (meta) kernel.
The op takes contiguous tensors of one dtype and device (except, at inference, a reduced-precision
value for a backend that reads it, see `reduced_value_dtypes`), spatial shapes and level starts as
int64 tensors on that device, and a resolved backend name; :func:`ms_deform_attn` prepares them.
"""

from typing import Tuple

import torch
from torch import Tensor

from .backends import IMPLEMENTATIONS

__all__ = ["OP_NAME", "BACKWARD_OP_NAME", "ms_deform_attn_op", "ms_deform_attn_backward_op"]

OP_NAME = "focus_detr::ms_deform_attn"
BACKWARD_OP_NAME = "focus_detr::ms_deform_attn_backward"


@torch.library.custom_op(OP_NAME, mutates_args=())
def ms_deform_attn_op(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    backend: str,
) -> Tensor:
    return IMPLEMENTATIONS[backend].forward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


@ms_deform_attn_op.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend):
    n, _, heads, head_dim = value.shape  # output in the locations' dtype (see `native`)
    return sampling_locations.new_empty(n, sampling_locations.shape[1], heads * head_dim)


@torch.library.custom_op(BACKWARD_OP_NAME, mutates_args=())
def ms_deform_attn_backward_op(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    grad_output: Tensor,
    backend: str,
) -> Tuple[Tensor, Tensor, Tensor]:
    return tuple(
        IMPLEMENTATIONS[backend].backward(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            grad_output,
        )
    )


@ms_deform_attn_backward_op.register_fake
def _(
    value,
    spatial_shapes,
    level_start_index,
    sampling_locations,
    attention_weights,
    grad_output,
    backend,
):
    return (
        torch.empty_like(value),
        torch.empty_like(sampling_locations),
        torch.empty_like(attention_weights),
    )


def _setup_context(ctx, inputs, output):
    value, spatial_shapes, level_start_index, locations, weights, backend = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start_index, locations, weights)
    ctx.backend = backend


def _backward(ctx, grad_output):
    grad_value, grad_loc, grad_w = ms_deform_attn_backward_op(
        *ctx.saved_tensors, grad_output.contiguous(), ctx.backend
    )
    return grad_value, None, None, grad_loc, grad_w, None


ms_deform_attn_op.register_autograd(_backward, setup_context=_setup_context)
