"""Multi-scale deformable attention: one functional core with swappable backends, and the module.

Backends and the selection rule: see :mod:`.backends` and :func:`ms_deform_attn`.
FLOP counting for fvcore: :data:`MSDA_FLOP_HANDLES`, :func:`ms_deform_attn_flops`.
"""

from .backends import (
    AUTO_ORDER,
    BACKENDS,
    ENV_VAR,
    BackendUnavailableError,
    available_backends,
    backend_unavailable_reason,
    reduced_value_dtypes,
    resolve_backend,
)
from .flops import MSDA_FLOP_HANDLES, ms_deform_attn_flops
from .functional import ms_deform_attn
from .module import MultiScaleDeformableAttention, project_values

__all__ = [
    "ms_deform_attn",
    "MultiScaleDeformableAttention",
    "project_values",
    "MSDA_FLOP_HANDLES",
    "ms_deform_attn_flops",
    "BACKENDS",
    "AUTO_ORDER",
    "ENV_VAR",
    "BackendUnavailableError",
    "available_backends",
    "backend_unavailable_reason",
    "reduced_value_dtypes",
    "resolve_backend",
]
