"""`MultiScaleDeformableAttention`: the Deformable-DETR attention module, detrex-compatible.

Constructor arguments, submodule names and forward arguments follow detrex, so detrex state dicts
load unchanged and detrex-style layer code can call it.
"""

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..graph_capture import capturing_graph
from .functional import ms_deform_attn

__all__ = ["MultiScaleDeformableAttention", "project_values"]


class MultiScaleDeformableAttention(nn.Module):
    """Each query attends to `num_points` bilinear samples per head and level around its reference.

    Args:
        embed_dim: channels of queries and values. Default 256.
        num_heads: attention heads; `embed_dim` must be divisible by it. Default 8.
        num_levels: feature levels. Default 4.
        num_points: sampling points per head and level. Default 4.
        img2col_step: accepted for detrex compatibility; no backend here needs it. Default 64.
        dropout: dropout on the output projection. Default 0.1 (detrex's default).
        batch_first: inputs and output are (N, L, C) if True, else (L, N, C). Default False.
        backend: deformable-attention backend, "pytorch", "native", "ext", "detrex" or "triton" (see
            :func:`ms_deform_attn`); None or "auto" defers to $FOCUS_DETR_MSDA_BACKEND, then to
            the automatic choice. A plain attribute: set it on a built model or by config.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        img2col_step: int = 64,
        dropout: float = 0.1,
        batch_first: bool = False,
        backend: Optional[str] = None,
    ):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.im2col_step = img2col_step
        self.batch_first = batch_first
        self.backend = backend
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self):
        """Deformable-DETR init: head h's points start on a ray at angle 2*pi*h/heads, point p at
        distance p+1 (in level pixels); uniform attention; Xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angle = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        direction = torch.stack([angle.cos(), angle.sin()], -1)
        direction = direction / direction.abs().max(-1, keepdim=True).values
        scale = torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        grid = direction.view(self.num_heads, 1, 1, 2) * scale  # (heads, 1, points, 2)
        grid = grid.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def project_value(
        self, value: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """`value_proj`, then zeros at padded tokens: (N, S, C) -> (N, S, C)."""
        value = self.value_proj(value)
        if _has_padding(key_padding_mask):
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        return value

    def sampling_locations(
        self, query: torch.Tensor, reference_points: torch.Tensor, spatial_shapes: torch.Tensor
    ) -> torch.Tensor:
        """Sampling locations (N, Q, heads, levels, points, 2) for batch-first `query` (N, Q, C).

        2-d references (N, Q, levels, 2): ref + offset / (W_l, H_l).
        4-d reference boxes (N, Q, levels, 4) as (cx, cy, w, h): ref_xy + offset / points * wh / 2.
        """
        n, q, _ = query.shape
        offsets = self.sampling_offsets(query).view(
            n, q, self.num_heads, self.num_levels, self.num_points, 2
        )
        # one fused multiply-add with a per-level (or per-box) scale: dividing by a broadcast
        # (levels, 1, 2) tensor and adding after is ~3x slower on CPU (20k queries: ~25 ms/layer)
        if reference_points.shape[-1] == 2:
            wh = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], -1)
            scale = 1.0 / wh.to(reference_points.dtype)  # in the references' precision
            ref = reference_points[:, :, None, :, None, :]
            return torch.addcmul(ref, offsets, scale[None, None, None, :, None])
        if reference_points.shape[-1] == 4:
            ref = reference_points[:, :, None, :, None]
            return torch.addcmul(ref[..., :2], offsets, ref[..., 2:] * (0.5 / self.num_points))
        raise ValueError(
            "reference_points must end in 2 (points) or 4 (boxes), got shape "
            f"{tuple(reference_points.shape)}"
        )

    def forward(
        self,
        query: torch.Tensor,
        key: Optional[torch.Tensor] = None,
        value: Optional[torch.Tensor] = None,
        identity: Optional[torch.Tensor] = None,
        query_pos: Optional[torch.Tensor] = None,
        key_padding_mask: Optional[torch.Tensor] = None,
        reference_points: Optional[torch.Tensor] = None,
        spatial_shapes: Optional[torch.Tensor] = None,
        level_start_index: Optional[torch.Tensor] = None,
        projected_value: Optional[torch.Tensor] = None,
        return_sampling: bool = False,
        **kwargs,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Attend from `query` into the multi-scale `value`.

        Args:
            query: (Q, N, C), or (N, Q, C) if batch_first.
            key: unused (detrex signature).
            value: (S, N, C) / (N, S, C); defaults to `query`.
            identity: residual added to the output; defaults to `query` (before `query_pos`).
            query_pos: added to `query` before computing offsets and weights.
            key_padding_mask: (N, S) bool, True at padded value tokens (they contribute zeros).
            reference_points: (N, Q, levels, 2) points or (N, Q, levels, 4) boxes, normalised.
            spatial_shapes: (levels, 2) int64 (H, W) per level.
            level_start_index: (levels,) int64.
            projected_value: (N, S, C) batch-first `value` already through :meth:`project_value`
                (e.g. several modules' projections of one map in one product, `project_values`);
                then `value` and `key_padding_mask` are not used.
            return_sampling: also return the sampling locations and attention weights used
                (callers that need them, e.g. Sparse DETR's attention-map target, would
                otherwise compute both a second time). Default False.

        Returns:
            Same layout as `query`: identity + dropout(output_proj(attention)); with
            `return_sampling` the tuple (output, locations (N, Q, heads, levels, points, 2)
            normalized (x, y), weights (N, Q, heads, levels, points) softmax over levels x
            points), locations and weights batch-first whatever `batch_first`.
        """
        if value is None:
            value = query
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.transpose(0, 1), value.transpose(0, 1)
        if projected_value is not None:
            value = projected_value
        n, s, _ = value.shape
        if reference_points is None or spatial_shapes is None or level_start_index is None:
            raise ValueError("reference_points, spatial_shapes and level_start_index are required")
        tokens = spatial_shapes[:, 0] * spatial_shapes[:, 1]
        if not capturing_graph() and int(tokens.sum()) != s:
            raise ValueError(
                f"value has {s} tokens but spatial_shapes "
                f"{spatial_shapes.tolist()} describe a different number"
            )
        if projected_value is None:
            value = self.project_value(value, key_padding_mask)
        value = value.view(n, s, self.num_heads, -1)
        locations = self.sampling_locations(query, reference_points, spatial_shapes)
        weights = (
            self.attention_weights(query)
            .view(n, query.shape[1], self.num_heads, self.num_levels * self.num_points)
            .softmax(-1)
        )
        weights = weights.view(n, query.shape[1], self.num_heads, self.num_levels, self.num_points)
        out = ms_deform_attn(
            value, spatial_shapes, level_start_index, locations, weights, backend=self.backend
        )
        out = self.output_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        out = self.dropout(out) + identity
        return (out, locations, weights) if return_sampling else out


def _has_padding(key_padding_mask: Optional[torch.Tensor]) -> bool:
    """Whether masking is needed: a CPU mask is checked for a padded token (an unpadded batch,
    e.g. one image, skips a pass over all layers' values); elsewhere checking would cost a
    device sync, so any mask is applied."""
    if key_padding_mask is None:
        return False
    return (
        key_padding_mask.device.type != "cpu" or capturing_graph() or bool(key_padding_mask.any())
    )


def project_values(
    modules: Sequence[MultiScaleDeformableAttention],
    value: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor] = None,
) -> List[torch.Tensor]:
    """`[m.project_value(value, key_padding_mask) for m in modules]` for several layers attending
    into the same map (the decoder's memory, Focus-DETR's original features), with the shared work
    done once: under autocast `value` is cast once (each projection would cast it again), and a
    CPU mask without padded tokens is dropped once instead of checked per module. One product per
    module, each output contiguous: a batched `baddbmm` over an expanded `value` is slower on CPU
    (it copies the expanded batch, and under autocast the cast materializes it: 60 ms of copies
    per call for 6 x 20k tokens).

    Args:
        modules: modules with equal `embed_dim`, batch-first value layout.
        value: (N, S, C); key_padding_mask: (N, S) bool or None.
    Returns:
        One (N, S, C) contiguous tensor per module.
    """
    device_type = value.device.type
    if value.dtype == torch.float32 and torch.is_autocast_enabled(device_type):
        value = value.to(torch.get_autocast_dtype(device_type))
    if not _has_padding(key_padding_mask):
        key_padding_mask = None
    return [m.project_value(value, key_padding_mask) for m in modules]
