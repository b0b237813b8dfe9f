"""`triton` backend: fused Triton kernels (see `triton_kernels.py`) for forward and backward.

Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set
before triton is first imported; slow, for tests). Any batch size; float64 accumulates in
float64, everything else in float32 (float16/bfloat16 values are read as is, grad_value is
accumulated in a float32 buffer).
"""

import contextlib
import functools
import os
from typing import Optional

import torch

__all__ = ["INSTALL_HINT", "unavailable_reason", "forward", "backward", "interpreter_active"]

INSTALL_HINT = "pip install triton (bundled with CUDA builds of torch), and run on a CUDA GPU"
_MIN_CAPABILITY = (7, 0)


def _kernels():
    kernels, reason = _load()
    if kernels is None:
        raise RuntimeError(f"{reason}; {INSTALL_HINT}")
    return kernels


def interpreter_active() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _load():
    try:
        from . import triton_kernels
    except Exception as e:
        return None, f"triton is not importable ({type(e).__name__}: {e})"
    return triton_kernels, None


def unavailable_reason(device: torch.device, dtype: Optional[torch.dtype] = None) -> Optional[str]:
    kernels, reason = _load()
    if kernels is None:
        return f"{reason}; {INSTALL_HINT}"
    if device.type == "cuda":
        cap = torch.cuda.get_device_capability(device)
        if cap < _MIN_CAPABILITY:
            return f"triton needs a GPU of compute capability >= {_MIN_CAPABILITY}, got {cap}"
        return None
    if device.type == "cpu" and interpreter_active():
        return None
    return (
        f"the triton backend needs CUDA tensors (got {device.type}); on CPU it runs only "
        "under Triton's interpreter (TRITON_INTERPRET=1 before importing triton, slow)"
    )


def _blocks(head_dim: int, dtype: torch.dtype, backward: bool):
    """(BLOCK_Q, BLOCK_D, num_warps). Tiles of ~2k (forward) / ~1k (backward) 4-byte
    accumulators, half for float64, keep the four corner tiles, the accumulator and the gradient
    tile in registers: compiled for sm_90 with head_dim 32 this gives 110 (forward) / 80
    (backward) registers per thread, no spills, 128-bit row loads and atomics."""
    import triton

    block_d = max(triton.next_power_of_2(head_dim), 2)
    budget = (1024 if backward else 2048) // (2 if dtype == torch.float64 else 1)
    block_q = min(128, max(8, budget // block_d))
    return block_q, block_d, 4


def _check_index_range(value: torch.Tensor):
    # offsets inside one image are int32 (half the registers of int64 addresses)
    if value[0].numel() >= 2**31:
        raise ValueError(
            f"triton backend: one image's value has {value[0].numel()} elements; "
            "at most 2**31 - 1 are supported (use the ext or pytorch backend)"
        )


def _acc_dtype(dtype):
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32


def _device_guard(device: torch.device):
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    kernels = _kernels()
    n, s, m, d = value.shape
    q, levels, points = (
        sampling_locations.shape[1],
        sampling_locations.shape[3],
        sampling_locations.shape[4],
    )
    out = value.new_empty(n, q, m * d)
    if out.numel() == 0:
        return out.zero_()
    _check_index_range(value)
    block_q, block_d, warps = _blocks(d, value.dtype, backward=False)
    grid = ((q + block_q - 1) // block_q, n * m)
    with _device_guard(value.device):
        kernels.msda_fwd_kernel[grid](
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            out,
            s,
            q,
            d,
            M=m,
            L=levels,
            P=points,
            BLOCK_Q=block_q,
            BLOCK_D=block_d,
            EVEN_D=block_d == d,
            ACC=_acc_dtype(value.dtype),
            num_warps=warps,
        )
    return out


def backward(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output
):
    kernels = _kernels()
    n, s, m, d = value.shape
    q, levels, points = (
        sampling_locations.shape[1],
        sampling_locations.shape[3],
        sampling_locations.shape[4],
    )
    low_precision = value.dtype in (torch.float16, torch.bfloat16)
    grad_value = torch.zeros(
        value.shape, device=value.device, dtype=torch.float32 if low_precision else value.dtype
    )
    grad_loc = torch.zeros_like(sampling_locations)
    grad_w = torch.zeros_like(attention_weights)
    if n * q * m > 0 and s > 0:
        _check_index_range(value)
        block_q, block_d, warps = _blocks(d, value.dtype, backward=True)
        grid = ((q + block_q - 1) // block_q, n * m)
        with _device_guard(value.device):
            kernels.msda_bwd_kernel[grid](
                value,
                spatial_shapes,
                level_start_index,
                sampling_locations,
                attention_weights,
                grad_output,
                grad_value,
                grad_loc,
                grad_w,
                s,
                q,
                d,
                M=m,
                L=levels,
                P=points,
                BLOCK_Q=block_q,
                BLOCK_D=block_d,
                EVEN_D=block_d == d,
                ACC=_acc_dtype(value.dtype),
                num_warps=warps,
            )
    return grad_value.to(value.dtype), grad_loc, grad_w
