"""Backend registry and the selection rule of :func:`ms_deform_attn`.

Rule: the explicit ``backend`` argument (a module passes its ``backend`` attribute, i.e. the config
key ``...backend=``) > the environment variable ``FOCUS_DETR_MSDA_BACKEND`` > ``auto``.
``None``, ``""`` and ``"auto"`` mean "not specified here, ask the next source".
``auto`` takes the first available backend of `AUTO_ORDER` for the tensors' device type:
CUDA: triton, detrex, ext, pytorch (the fused, build-free Triton kernels first, then the compiled
CUDA ops, which share one algorithm; GPU timings pending, see README);
CPU: native, ext, pytorch (our own C++ kernels, compiled on first use, then the PyPI package's;
tools/benchmark_msda.py, DINO-R50 shapes: ext 1.7-4.6x faster forward and 2-3.9x faster
forward+backward than pytorch, native faster than ext, README; triton runs on CPU only under its
slow interpreter and is never chosen automatically there).
A backend that was asked for explicitly but cannot run raises `BackendUnavailableError` saying
why and what to install; it never silently falls back.
"""

import os
from typing import Dict, List, Optional, Tuple

import torch

from . import detrex_backend, ext_backend, native_backend, pytorch_backend, triton_backend

__all__ = [
    "ENV_VAR",
    "BACKENDS",
    "AUTO_ORDER",
    "BackendUnavailableError",
    "available_backends",
    "backend_unavailable_reason",
    "reduced_value_dtypes",
    "resolve_backend",
]

ENV_VAR = "FOCUS_DETR_MSDA_BACKEND"
IMPLEMENTATIONS = {
    "pytorch": pytorch_backend,
    "native": native_backend,
    "ext": ext_backend,
    "detrex": detrex_backend,
    "triton": triton_backend,
}
BACKENDS: Tuple[str, ...] = tuple(IMPLEMENTATIONS)
AUTO_ORDER: Dict[str, Tuple[str, ...]] = {
    "cuda": ("triton", "detrex", "ext", "pytorch"),
    "cpu": ("native", "ext", "pytorch"),
}
_AUTO_OTHER = ("ext", "pytorch")  # e.g. mps


class BackendUnavailableError(RuntimeError):
    """A deformable-attention backend was requested but cannot run here."""


def backend_unavailable_reason(
    name: str, device, dtype: Optional[torch.dtype] = None
) -> Optional[str]:
    """None if backend `name` can run tensors on `device` (of `dtype`), else the reason."""
    if name == "pytorch":
        return None
    return IMPLEMENTATIONS[name].unavailable_reason(torch.device(device), dtype)


def reduced_value_dtypes(name: str) -> Tuple[torch.dtype, ...]:
    """Value dtypes backend `name` reads as they are beside float32/float64 locations and weights,
    in its forward (a backend declares them as `REDUCED_VALUE_DTYPES`; most declare none)."""
    return tuple(getattr(IMPLEMENTATIONS[name], "REDUCED_VALUE_DTYPES", ()))


def available_backends(device, dtype: Optional[torch.dtype] = None) -> List[str]:
    """Names of the backends that can run on `device`, in `BACKENDS` order."""
    return [b for b in BACKENDS if backend_unavailable_reason(b, device, dtype) is None]


def _requested(backend: Optional[str]) -> Tuple[str, str]:
    """(name, where it came from) following argument > environment variable > auto."""
    if backend is not None and str(backend).strip().lower() not in ("", "auto"):
        return str(backend).strip().lower(), "the backend argument"
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env not in ("", "auto"):
        return env, f"${ENV_VAR}"
    return "auto", "default"


def resolve_backend(backend: Optional[str], device, dtype: Optional[torch.dtype] = None) -> str:
    """The backend that runs for tensors on `device`; see the module docstring for the rule.

    Raises:
        ValueError: unknown backend name.
        BackendUnavailableError: a named backend cannot run here (message: why, how to fix).
    """
    device = torch.device(device)
    name, source = _requested(backend)
    if name == "auto":
        for candidate in AUTO_ORDER.get(device.type, _AUTO_OTHER):
            if backend_unavailable_reason(candidate, device, dtype) is None:
                return candidate
        return "pytorch"
    if name not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown deformable-attention backend {name!r} (from {source}); "
            f"choose one of {('auto',) + BACKENDS}"
        )
    reason = backend_unavailable_reason(name, device, dtype)
    if reason is not None:
        raise BackendUnavailableError(
            f"deformable-attention backend {name!r} (from {source}) is unavailable for "
            f"{device.type} tensors: {reason}"
        )
    return name
