"""`detrex` backend: detrex's compiled CUDA op, when ``detrex._C`` is importable.

detrex's extension exposes ``ms_deform_attn_forward(value, spatial_shapes, level_start_index,
sampling_loc, attn_weight, im2col_step)`` and ``ms_deform_attn_backward(..., grad_output,
im2col_step) -> [grad_value, grad_sampling_loc, grad_attn_weight]``, CUDA only (its CPU path
raises), float32/float64 only, contiguous inputs, and a batch that is a multiple of
min(batch, im2col_step). We pass the largest such step so that any batch size works, and compute
float16/bfloat16 in float32.
"""

import functools
import importlib
from typing import Optional

import torch

from .ext_backend import _compute_dtype, _im2col_step

__all__ = ["INSTALL_HINT", "unavailable_reason", "forward", "backward"]

INSTALL_HINT = (
    "install detrex with its CUDA extension (clone IDEA-Research/detrex, then "
    "`pip install -e .` with CUDA_HOME set, so that `import detrex._C` works)"
)


@functools.lru_cache(maxsize=None)
def _load():
    """(detrex._C, None) when importable, else (None, reason). Cached; tests clear it."""
    try:
        native = importlib.import_module("detrex._C")
    except Exception as e:
        return None, f"detrex._C is not importable ({type(e).__name__}: {e})"
    missing = [
        f for f in ("ms_deform_attn_forward", "ms_deform_attn_backward") if not hasattr(native, f)
    ]
    if missing:
        return None, f"detrex._C lacks {missing}"
    return native, None


def unavailable_reason(device: torch.device, dtype: Optional[torch.dtype] = None) -> Optional[str]:
    native, reason = _load()
    if native is None:
        return f"{reason}; {INSTALL_HINT}"
    if device.type != "cuda":
        return (
            f"detrex's op runs on CUDA tensors only (got {device.type}); use backend "
            "'ext' or 'pytorch' on this device"
        )
    return None


def _native():
    native, reason = _load()
    if native is None:
        raise RuntimeError(f"{reason}; {INSTALL_HINT}")
    return native


def forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    native = _native()
    dtype = _compute_dtype(value.dtype)
    out = native.ms_deform_attn_forward(
        value.to(dtype).contiguous(),
        spatial_shapes.contiguous(),
        level_start_index.contiguous(),
        sampling_locations.to(dtype).contiguous(),
        attention_weights.to(dtype).contiguous(),
        _im2col_step(value.shape[0]),
    )
    return out.to(value.dtype)


def backward(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output
):
    native = _native()
    dtype = _compute_dtype(value.dtype)
    grads = native.ms_deform_attn_backward(
        value.to(dtype).contiguous(),
        spatial_shapes.contiguous(),
        level_start_index.contiguous(),
        sampling_locations.to(dtype).contiguous(),
        attention_weights.to(dtype).contiguous(),
        grad_output.to(dtype).contiguous(),
        _im2col_step(value.shape[0]),
    )
    return tuple(
        g.to(t.dtype) for g, t in zip(grads, (value, sampling_locations, attention_weights))
    )
