"""`DualAttentionEncoderLayer`: one Focus-DETR encoder layer (paper Algorithm 1).

Works on one layer's kept (foreground) tokens:
1. object score of every kept token (foreground logit x max class logit, Eq. 3);
2. the top-k object tokens attend to each other (multi-head self-attention, q = k = token + pos,
   v = token, residual, LayerNorm `norm2`) and are scattered back into the kept set;
3. all kept tokens attend deformably into the ORIGINAL multi-scale features (not the updated
   token map), then LayerNorm, FFN, LayerNorm.

Submodule names are the published ones: `attentions.0` object-token self-attention,
`attentions.1` deformable cross attention, `norm2` after the self-attention, `norms.0` after the
cross attention, `ffns.0`, `norms.1` after the FFN.
"""

from typing import Optional, Tuple

import torch
from torch import nn

from ...layers import FFN, MultiheadAttention, MultiScaleDeformableAttention
from .object_score import OBJECT_SCORE_MODES, object_token_scores
from .token_ops import gather_tokens, scatter_tokens

__all__ = ["DualAttentionEncoderLayer"]


class DualAttentionEncoderLayer(nn.Module):
    """Args:
    embed_dim: channels. Default 256.
    num_heads: heads of both attentions. Default 8.
    feedforward_dim: FFN hidden width. Default 2048.
    dropout: dropout of attentions and FFN. Default 0.0 (published).
    num_levels: feature levels of the deformable attention. Default 4.
    num_points: sampling points per head and level. Default 4.
    num_object_tokens: k, object tokens through self-attention per image (clamped to the
        image's kept count; 0 disables the self-attention). Default 300.
    object_score: "logit_product" (published) or "probability_product" (see `object_score`).
    self_attention, cross_attention, ffn: prebuilt submodules replacing the defaults.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        feedforward_dim: int = 2048,
        dropout: float = 0.0,
        num_levels: int = 4,
        num_points: int = 4,
        num_object_tokens: int = 300,
        object_score: str = "logit_product",
        self_attention: Optional[nn.Module] = None,
        cross_attention: Optional[nn.Module] = None,
        ffn: Optional[nn.Module] = None,
    ):
        super().__init__()
        if object_score not in OBJECT_SCORE_MODES:
            raise ValueError(
                f"object_score must be one of {OBJECT_SCORE_MODES}, got {object_score!r}"
            )
        if num_object_tokens < 0:
            raise ValueError(f"num_object_tokens must be >= 0, got {num_object_tokens}")
        if self_attention is None:
            self_attention = MultiheadAttention(
                embed_dim, num_heads, attn_drop=dropout, batch_first=True
            )
        if cross_attention is None:
            cross_attention = MultiScaleDeformableAttention(
                embed_dim=embed_dim,
                num_heads=num_heads,
                num_levels=num_levels,
                num_points=num_points,
                dropout=dropout,
                batch_first=True,
            )
        if ffn is None:
            ffn = FFN(embed_dim, feedforward_dim, dropout)
        self.embed_dim = embed_dim
        self.num_object_tokens = num_object_tokens
        self.object_score = object_score
        self.attentions = nn.ModuleList([self_attention, cross_attention])
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ffns = nn.ModuleList([ffn])
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)])

    @property
    def self_attention(self) -> nn.Module:
        return self.attentions[0]

    @property
    def cross_attention(self) -> nn.Module:
        return self.attentions[1]

    def select_object_tokens(
        self,
        query: torch.Tensor,
        foreground_logits: torch.Tensor,
        query_valid: torch.Tensor,
        class_head: Optional[nn.Module],
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k object tokens of each image among its valid kept tokens.

        Returns:
            index (N, k) positions in the kept list, valid (N, k) bool, scores (N, K) of all kept
            tokens (-inf at invalid slots).
        """
        class_logits = class_head(query) if class_head is not None else None
        scores = object_token_scores(class_logits, foreground_logits, self.object_score)
        scores = scores.masked_fill(~query_valid, float("-inf"))
        k = min(self.num_object_tokens, query.shape[1])
        index = torch.topk(scores.detach(), k, dim=1).indices
        count = query_valid.sum(1).clamp(max=self.num_object_tokens)
        valid = torch.arange(k, device=query.device)[None] < count[:, None]
        return index, valid, scores

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        foreground_logits: torch.Tensor,
        query_valid: torch.Tensor,
        value: torch.Tensor,
        value_padding_mask: Optional[torch.Tensor],
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        class_head: Optional[nn.Module] = None,
        projected_value: Optional[torch.Tensor] = None,
        query_order: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, dict]:
        """Update one layer's kept tokens.

        Args:
            query: (N, K, C) kept tokens (padded list; rows with `query_valid` False are ignored).
            query_pos: (N, K, C) their position embeddings.
            reference_points: (N, K, L, 2) their deformable-attention reference points.
            foreground_logits: (N, K) their foreground logits.
            query_valid: (N, K) bool.
            value: (N, S, C) the original multi-scale features (the deformable attention's values).
            value_padding_mask: (N, S) bool, True at padded value tokens; or None.
            spatial_shapes, level_start_index: (L, 2), (L,) int64.
            class_head: MLP_C (num_classes logits); None ranks object tokens by foreground logit.
            projected_value: (N, S, C) `value` already through the cross attention's value
                projection and padding mask (`project_values`: all layers' at once), or
                None to project here.
            query_order: (N, K) int64, a permutation of the kept slots in which the per-token
                part (cross attention, FFN, norms) runs; the output keeps the input's order.
                The result does not depend on it; the encoder passes the kept tokens' spatial
                order, in which neighbouring queries sample neighbouring features (the kept
                list is in score order), which makes the deformable attention's memory reads
                local: about twice as fast on a CPU.
        Returns:
            (N, K, C) updated kept tokens, and a dict with `object_index` (N, k) positions in the
            kept list, `object_valid` (N, k) and `object_scores` (N, K).
        """
        info = {}
        if self.num_object_tokens > 0:
            index, valid, scores = self.select_object_tokens(
                query, foreground_logits, query_valid, class_head
            )
            info.update(object_index=index, object_valid=valid, object_scores=scores)
        if self.num_object_tokens > 0 and index.shape[1] > 0:
            objects = gather_tokens(query, index)
            objects_pos = gather_tokens(query_pos, index)
            # an image without object tokens attends to its (ignored) first slot, not to nothing,
            # which would give NaN rows (and NaN gradients through the discarded rows)
            ignore = ~valid & valid.any(1, keepdim=True)
            objects = self.self_attention(objects, query_pos=objects_pos, key_padding_mask=ignore)
            objects = self.norm2(objects)
            query = scatter_tokens(query, index, objects, valid)
        if query_order is not None:
            query, query_pos, reference_points = (
                gather_tokens(t, query_order) for t in (query, query_pos, reference_points)
            )
        extra = {} if projected_value is None else {"projected_value": projected_value}
        query = self.cross_attention(
            query,
            value=value,
            query_pos=query_pos,
            key_padding_mask=value_padding_mask,
            reference_points=reference_points,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            **extra,
        )
        query = self.norms[0](query)
        query = self.ffns[0](query)
        query = self.norms[1](query)
        if query_order is not None:
            query = gather_tokens(query, query_order.argsort(1))  # back to the kept list's order
        return query, info
