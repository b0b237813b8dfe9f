"""`native` backend: this package's own CPU kernels (`csrc/ms_deform_attn_cpu.cpp`).

Compiled on first use with `torch.utils.cpp_extension` (a C++ compiler and ninja are needed; about
30 s once, then cached under ~/.cache/torch_extensions, rebuilt when the source or torch changes),
with the vector instructions torch itself dispatches to on this CPU (AVX-512, AVX2 or none), so a
build never uses instructions the machine lacks. Float32 and float64 forward and backward; the
forward also reads bfloat16 or float16 values with float32 locations and weights (reduced-precision
inference reads half the bytes and skips the cast). Forward: one query per step, parallel over the
queries, the head's channels accumulated contiguously; 2-3x faster than `ext` on CPU
(tools/benchmark_msda.py). Backward: parallel over (image, head), no atomics, deterministic.
"""
import functools
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

import torch

__all__ = ["SOURCE", "REDUCED_VALUE_DTYPES", "unavailable_reason", "forward", "backward"]

SOURCE = Path(__file__).with_name("csrc") / "ms_deform_attn_cpu.cpp"
# value dtypes the forward reads as they are next to float32/float64 locations
REDUCED_VALUE_DTYPES = (torch.bfloat16, torch.float16)
_COMPUTE_DTYPES = (torch.float32, torch.float64)
# compiler flags per `torch.backends.cpu.get_cpu_capability()`: what torch's own kernels use here
_ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}
_logger = logging.getLogger(__name__)


def _ensure_ninja():
    """torch's JIT build runs `ninja` from PATH; a pip-installed ninja lives beside Python."""
    if shutil.which("ninja"):
        return
    try:
        import ninja  # the PyPI package
    except ImportError:
        return  # the build will say that ninja is missing
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


@functools.lru_cache(maxsize=None)
def _load():
    """(compiled module, None), or (None, why it could not be built)."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = ["-O3", "-fopenmp"] + _ISA_FLAGS.get(capability, [])
    _ensure_ninja()
    _logger.info("loading the native deformable-attention CPU kernel (built on first use, ~30 s)")
    # torch warns at import that no CUDA runtime is found: irrelevant to a CPU-only build
    torch_logger = logging.getLogger("torch.utils.cpp_extension")
    level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension

        module = cpp_extension.load(
            name=f"focus_detr_msda_cpu_{capability.lower()}", sources=[str(SOURCE)],
            extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as e:  # no compiler or ninja, a failed compilation
        message = str(e).strip().splitlines()
        return None, (f"its C++ kernel ({SOURCE.name}) did not build: {type(e).__name__}: "
                      f"{message[0] if message else ''} (needs a C++ compiler and ninja)")
    finally:
        torch_logger.setLevel(level)
    return module, None


def unavailable_reason(device: torch.device, dtype: Optional[torch.dtype] = None) -> Optional[str]:
    """None when the backend can run tensors of `device`/`dtype`, else why not."""
    if device.type != "cpu":
        return f"the native kernels run on CPU only, not {device.type}"
    _, reason = _load()
    return reason


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in _COMPUTE_DTYPES else torch.float32


def _module():
    """The compiled kernels (built on first use); an error saying why when they cannot be."""
    module, reason = _load()
    if module is None:
        raise RuntimeError(reason)
    return module


def forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Output in the locations' dtype; `value` may be bfloat16/float16 beside float32 locations."""
    dtype = sampling_locations.dtype
    compute = _compute_dtype(dtype)
    if value.dtype not in REDUCED_VALUE_DTYPES:
        value = value.to(compute)
    out = _module().forward(value, spatial_shapes, level_start_index,
                         sampling_locations.to(compute), attention_weights.to(compute))
    return out.to(dtype)


def backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
             grad_output):
    compute = _compute_dtype(sampling_locations.dtype)
    grads = _module().backward(
        value.to(compute), spatial_shapes, level_start_index, sampling_locations.to(compute),
        attention_weights.to(compute), grad_output.to(compute).contiguous())
    return tuple(g.to(t.dtype) for g, t in
                 zip(grads, (value, sampling_locations, attention_weights)))
