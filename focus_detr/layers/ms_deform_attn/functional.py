"""The functional core `ms_deform_attn`: input checks, backend choice, one custom op.

Backends (README "Deformable attention backends"):

- ``pytorch``: pure PyTorch (`grid_sample` per level), any device and floating dtype.
- ``native``: our own C++ CPU kernels, compiled on first use (`native_backend`).
- ``ext``: the compiled kernels of ``torch-ms-deform-attn`` 0.1.1 (CPU/OpenMP, CUDA if built so).
- ``detrex``: detrex's compiled CUDA op (``detrex._C``), CUDA tensors only.
- ``triton``: fused Triton kernels, CUDA (or CPU under ``TRITON_INTERPRET=1``).

Selection: explicit ``backend`` argument (the module's ``backend`` attribute / config key) >
``$FOCUS_DETR_MSDA_BACKEND`` > ``auto`` (CUDA: triton, detrex, ext, pytorch; CPU: native, ext,
pytorch; first available). See :mod:`.backends`.
"""

from typing import Optional, Sequence, Tuple, Union

import torch

from ..graph_capture import capturing_graph
from .backends import reduced_value_dtypes, resolve_backend
from .export_forms import export_form, exported_ms_deform_attn
from .op import ms_deform_attn_op

__all__ = ["ms_deform_attn", "resolve_backend"]


def _as_index_tensor(x, device) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.int64, device=device)


def _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    if value.dim() != 4:
        raise ValueError(f"value must be (N, S, heads, head_dim), got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "sampling_locations must be (N, Q, heads, levels, points, 2), got shape "
            f"{tuple(sampling_locations.shape)}"
        )
    n, q, heads, levels, points, _ = sampling_locations.shape
    if tuple(attention_weights.shape) != (n, q, heads, levels, points):
        raise ValueError(
            f"attention_weights must be {(n, q, heads, levels, points)} "
            f"(N, Q, heads, levels, points), got {tuple(attention_weights.shape)}"
        )
    if value.shape[0] != n or value.shape[2] != heads:
        raise ValueError(
            f"value {tuple(value.shape)} and sampling_locations "
            f"{tuple(sampling_locations.shape)} disagree on batch or heads"
        )
    if tuple(spatial_shapes.shape) != (levels, 2):
        raise ValueError(
            f"spatial_shapes must be ({levels}, 2) (H, W) per level, got shape "
            f"{tuple(spatial_shapes.shape)}"
        )
    if tuple(level_start_index.shape) != (levels,):
        raise ValueError(
            f"level_start_index must be ({levels},), got {tuple(level_start_index.shape)}"
        )
    for name, t in (
        ("value", value),
        ("sampling_locations", sampling_locations),
        ("attention_weights", attention_weights),
    ):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    # content checks only where they cost no device sync; levels may sit anywhere in S
    if level_start_index.device.type == "cpu" and not capturing_graph():
        sizes = (spatial_shapes[:, 0] * spatial_shapes[:, 1]).tolist()
        for lvl, (start, size) in enumerate(zip(level_start_index.tolist(), sizes)):
            if start < 0 or start + size > value.shape[1] or size <= 0:
                raise ValueError(
                    f"level {lvl} (shape {spatial_shapes[lvl].tolist()}, start {start}) does not "
                    f"fit in value's {value.shape[1]} tokens"
                )


def _reads_value_as_is(backend, value, dtype, *others) -> bool:
    """Whether a reduced-precision `value` can go to `backend` uncast: the backend reads its dtype
    (`reduced_value_dtypes`, e.g. `native`'s bfloat16/float16) beside float32/float64 locations
    and weights, and no gradient is needed (inference under autocast)."""
    return (
        value.dtype in reduced_value_dtypes(backend)
        and dtype in (torch.float32, torch.float64)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in (value,) + others))
    )


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: Union[torch.Tensor, Sequence[Tuple[int, int]]],
    level_start_index: Optional[torch.Tensor],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Multi-scale deformable attention: weighted bilinear samples of multi-level values.

    out[n, q, h*D:(h+1)*D] = sum over levels l and points p of attention_weights[n, q, h, l, p]
    times value level l of head h sampled bilinearly (zero padding, align_corners=False) at
    sampling_locations[n, q, h, l, p] (x scaled by W_l, y by H_l).

    Args:
        value: (N, S, heads, head_dim), the flattened levels back to back, S = sum(H_l * W_l).
        spatial_shapes: (levels, 2) int tensor or sequence of (H_l, W_l).
        level_start_index: (levels,) start of each level in S; None computes it.
        sampling_locations: (N, Q, heads, levels, points, 2), (x, y) normalised to [0, 1] per
            level (0 and 1 are the outer edges of the border pixels; outside reads zeros).
        attention_weights: (N, Q, heads, levels, points), used as given (no softmax).
        backend: ``"pytorch"``, ``"native"``, ``"ext"``, ``"detrex"``, ``"triton"``; None or
            ``"auto"`` defer to ``$FOCUS_DETR_MSDA_BACKEND``, then to the automatic choice (module
            docstring).

    Returns:
        (N, Q, heads * head_dim), in the common dtype of the floating inputs (under autocast a
        bfloat16 value with float32 locations computes in float32: locations keep full precision;
        the `native` backend reads such a value without casting it when no gradient is needed).

    Raises:
        ValueError / TypeError: inconsistent shapes or dtypes, unknown backend.
        BackendUnavailableError: the requested backend cannot run here (says why, what to install).
    """
    device = value.device
    spatial_shapes = _as_index_tensor(spatial_shapes, device)
    if level_start_index is None:
        sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
        level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    dtype = torch.promote_types(
        torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype
    )
    if export_form() is not None:  # inside an export (focus_detr.deploy): graph ops, no backend
        return exported_ms_deform_attn(
            value.to(dtype),
            spatial_shapes,
            level_start_index,
            sampling_locations.to(dtype),
            attention_weights.to(dtype),
        )
    name = resolve_backend(backend, device, dtype)
    if not _reads_value_as_is(name, value, dtype, sampling_locations, attention_weights):
        value = value.to(dtype)
    return ms_deform_attn_op(
        value.contiguous(),
        spatial_shapes,
        _as_index_tensor(level_start_index, device).contiguous(),
        sampling_locations.to(device, dtype).contiguous(),
        attention_weights.to(device, dtype).contiguous(),
        name,
    )
