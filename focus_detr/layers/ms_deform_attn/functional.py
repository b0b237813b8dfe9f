"""The functional core `ms_deform_attn` and its backend choice.

Backends (see README "Deformable attention backends"):
- ``pytorch``: pure PyTorch, everywhere.
Selection: the ``backend`` argument, else the ``FOCUS_DETR_MSDA_BACKEND`` environment variable,
else ``auto`` (the fastest available backend for the tensors' device).
"""
import os
from typing import Optional

import torch

from .pytorch_backend import ms_deform_attn_pytorch

ENV_VAR = "FOCUS_DETR_MSDA_BACKEND"
BACKENDS = ("pytorch",)


def _spatial_shapes_list(spatial_shapes):
    if isinstance(spatial_shapes, torch.Tensor):
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(int(h), int(w)) for h, w in spatial_shapes]


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    """The backend to run: explicit argument, then the environment variable, then ``auto``."""
    name = backend or os.environ.get(ENV_VAR) or "auto"
    if name == "auto":
        return "pytorch"
    if name not in BACKENDS:
        raise ValueError(f"unknown deformable-attention backend {name!r}; choose one of "
                         f"{('auto',) + BACKENDS} (argument or ${ENV_VAR})")
    return name


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Multi-scale deformable attention: weighted bilinear samples of multi-level values.

    Args:
        value: (N, S, heads, head_dim), the flattened levels concatenated, S = sum(H_l * W_l).
        spatial_shapes: (levels, 2) int tensor or sequence of (H_l, W_l).
        level_start_index: (levels,) start of each level in S.
        sampling_locations: (N, Q, heads, levels, points, 2), (x, y) normalised to [0, 1] per
            level (0 and 1 are the outer edges of the border pixels; outside reads zeros).
        attention_weights: (N, Q, heads, levels, points).
        backend: ``None``/``"auto"`` or a backend name (see module docstring).

    Returns:
        (N, Q, heads * head_dim).
    """
    resolve_backend(backend, value.device)
    return ms_deform_attn_pytorch(value, _spatial_shapes_list(spatial_shapes),
                                  sampling_locations, attention_weights)
