"""`ext` backend: the compiled kernels of the PyPI package ``torch-ms-deform-attn`` (0.1.1).

The package registers two dispatcher ops, ``torch_ms_deform_attn::forward`` and ``::backward``
(CPU/OpenMP kernel always; CUDA when it was built against a CUDA toolkit; MPS on Apple), in
float32 and float64. We call the raw ops (the autograd wiring is ours, shared by all backends);
float16/bfloat16 inputs are computed in float32 and cast back, as the package itself does.
"""

import functools
from typing import Optional

import torch

__all__ = ["INSTALL_HINT", "unavailable_reason", "forward", "backward"]

INSTALL_HINT = "pip install --no-build-isolation torch-ms-deform-attn==0.1.1"
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=None)
def _load():
    """(native module, None) when the package imports, else (None, reason)."""
    try:
        from torch_ms_deform_attn import _C  # noqa: F401  (registers the dispatcher ops)
    except Exception as e:  # ImportError, or an undefined symbol after a torch upgrade
        return None, f"torch_ms_deform_attn failed to import ({type(e).__name__}: {e})"
    return _C, None


def unavailable_reason(device: torch.device, dtype: Optional[torch.dtype] = None) -> Optional[str]:
    """None when the backend can run tensors of `device`/`dtype`, else why not."""
    native, reason = _load()
    if native is None:
        return f"{reason}; install it with `{INSTALL_HINT}`"
    if device.type == "cuda" and not getattr(native, "with_cuda", False):
        return (
            "torch_ms_deform_attn was built without CUDA; rebuild it where the CUDA toolkit "
            "and a GPU are visible: `pip install --force-reinstall --no-build-isolation "
            "torch-ms-deform-attn==0.1.1`"
        )
    if device.type == "mps" and not getattr(native, "with_mps", False):
        return "torch_ms_deform_attn was built without MPS support"
    if device.type not in ("cpu", "cuda", "mps"):
        return f"torch_ms_deform_attn has no kernel for device type {device.type!r}"
    if device.type == "mps" and dtype == torch.float64:
        return "torch_ms_deform_attn's MPS kernel has no float64"
    return None


def _im2col_step(batch: int, cap: int = 64) -> int:
    """Largest divisor of `batch` <= cap: the CUDA kernel processes the batch in equal chunks."""
    return max(s for s in range(1, min(batch, cap) + 1) if batch % s == 0) if batch else 1


def _ops():
    """The package's dispatcher ops (importing the package registers them)."""
    native, reason = _load()
    if native is None:
        raise RuntimeError(f"{reason}; install it with `{INSTALL_HINT}`")
    return torch.ops.torch_ms_deform_attn


def _compute_dtype(dtype):
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    dtype = _compute_dtype(value.dtype)
    out = _ops().forward(
        value.to(dtype),
        spatial_shapes,
        level_start_index,
        sampling_locations.to(dtype),
        attention_weights.to(dtype),
        _im2col_step(value.shape[0]),
    )
    return out.to(value.dtype)


def backward(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output
):
    dtype = _compute_dtype(value.dtype)
    grads = _ops().backward(
        value.to(dtype),
        spatial_shapes,
        level_start_index,
        sampling_locations.to(dtype),
        attention_weights.to(dtype),
        grad_output.to(dtype),
        _im2col_step(value.shape[0]),
    )
    return tuple(
        g.to(t.dtype) for g, t in zip(grads, (value, sampling_locations, attention_weights))
    )
