"""DINO's decoder: deformable cross attention from box queries, iterative box refinement with
look-forward-twice, and the per-layer class/box heads (plus one more pair for the two-stage
encoder proposals)."""

import copy
import math
from typing import Dict, Optional

import torch
from torch import nn

from ...layers import (
    FFN,
    MLP,
    MultiheadAttention,
    MultiScaleDeformableAttention,
    init_deformable_transformer,
    get_sine_pos_embed,
    inverse_sigmoid,
)
from ...layers.ms_deform_attn import project_values

__all__ = ["DeformableDecoderLayer", "DINODecoder", "deformable_sampling"]


def deformable_sampling(
    attn: MultiScaleDeformableAttention,
    query: torch.Tensor,
    reference_points: torch.Tensor,
    spatial_shapes: torch.Tensor,
):
    """Where and how strongly `attn` samples for batch-first `query` (query + pos, (N, Q, C)),
    computed stand-alone (a forward with `return_sampling=True` returns the same tensors).

    Returns:
        locations (N, Q, heads, levels, points, 2) normalized (x, y);
        weights (N, Q, heads, levels, points), softmax over levels x points.
    """
    n, q, _ = query.shape
    locations = attn.sampling_locations(query, reference_points, spatial_shapes)
    weights = attn.attention_weights(query).view(n, q, attn.num_heads, -1).softmax(-1)
    return locations, weights.view(n, q, attn.num_heads, attn.num_levels, attn.num_points)


class DeformableDecoderLayer(nn.Module):
    """Post-norm layer: self attention, LayerNorm, deformable cross attention, LayerNorm, FFN,
    LayerNorm (submodules `attentions.0/1`, `ffns.0`, `norms.0/1/2` as in detrex).

    Args: see `DeformableEncoderLayer`; `attn_dropout` also applies to the self attention.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        feedforward_dim: int = 2048,
        attn_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.attentions = nn.ModuleList(
            [
                MultiheadAttention(embed_dim, num_heads, attn_drop=attn_dropout, batch_first=True),
                MultiScaleDeformableAttention(
                    embed_dim,
                    num_heads,
                    num_levels,
                    num_points,
                    dropout=attn_dropout,
                    batch_first=True,
                ),
            ]
        )
        self.ffns = nn.ModuleList([FFN(embed_dim, feedforward_dim, ffn_dropout)])
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dim) for _ in range(3)])

    def forward(
        self,
        query,
        query_pos,
        memory,
        memory_padding_mask,
        reference_points,
        spatial_shapes,
        level_start_index,
        self_attn_mask=None,
        return_sampling: bool = False,
        projected_memory=None,
    ):
        """Args:
            query, query_pos: (N, Q, C); memory: (N, S, C); memory_padding_mask: (N, S).
            reference_points: (N, Q, L, 4) boxes in each level's padded frame.
            self_attn_mask: (Q, Q) bool, True where query i may not see query j.
            projected_memory: (N, S, C) `memory` already through the cross attention's
                `project_value` (the decoder projects all layers' at once), or None.
        Returns:
            (N, Q, C), and the cross attention's (locations, weights) if `return_sampling`.
        """
        x = self.norms[0](self.attentions[0](query, query_pos, attn_mask=self_attn_mask))
        extra = {} if projected_memory is None else {"projected_value": projected_memory}
        if return_sampling:  # the attention hands back what it computed: no second pass
            extra["return_sampling"] = True
        x = self.attentions[1](
            x,
            value=memory,
            query_pos=query_pos,
            key_padding_mask=memory_padding_mask,
            reference_points=reference_points,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            **extra,
        )
        x, sampling = (x[0], x[1:]) if return_sampling else (x, None)  # (locations, weights)
        x = self.norms[2](self.ffns[0](self.norms[1](x)))
        return x, sampling


class DINODecoder(nn.Module):
    """Box-query decoder with iterative refinement.

    Layer i reads its reference boxes (detached), embeds them (sine + `ref_point_head`) as query
    positions, and refines them with `bbox_embed[i]` applied to its raw output. Its predictions
    come from the LayerNorm-ed output (`norm`): class `class_embed[i]`, box `bbox_embed[i]` added
    to the previous layer's refined boxes WITHOUT detaching them (look forward twice), so the
    box loss of layer i also trains layer i-1's refinement.

    Heads: `class_embed` and `bbox_embed` hold num_layers + 1 independent heads; the last pair
    scores and regresses the two-stage encoder proposals.

    Args:
        layer: decoder layer to replicate (e.g. `DeformableDecoderLayer`).
        num_layers: number of layers. Default 6.
        num_classes: classes of the class heads. Default 80.
        look_forward_twice: see above. Default True.
        prior_prob: initial foreground probability of the class heads. Default 0.01.
        box_head_layers: layers of each box MLP. Default 3.
    """

    def __init__(
        self,
        layer: nn.Module,
        num_layers: int = 6,
        num_classes: int = 80,
        look_forward_twice: bool = True,
        prior_prob: float = 0.01,
        box_head_layers: int = 3,
    ):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.embed_dim = c = layer.embed_dim
        self.num_classes = num_classes
        self.look_forward_twice = look_forward_twice
        self.ref_point_head = MLP(2 * c, c, c, 2)
        self.norm = nn.LayerNorm(c)
        self.init_weights()
        self.class_embed = nn.ModuleList(nn.Linear(c, num_classes) for _ in range(num_layers + 1))
        self.bbox_embed = nn.ModuleList(
            MLP(c, c, 4, box_head_layers) for _ in range(num_layers + 1)
        )
        bias = -math.log((1 - prior_prob) / prior_prob)
        for head in self.class_embed:
            nn.init.constant_(head.bias, bias)
        for head in self.bbox_embed:  # start from the reference boxes
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)

    def init_weights(self):
        """Xavier-uniform matrices of the layers and query-position head, then Deformable-DETR's
        init of the deformable attention (the heads keep PyTorch's default init)."""
        init_deformable_transformer(self)

    @property
    def proposal_class_head(self) -> nn.Module:
        return self.class_embed[self.num_layers]

    @property
    def proposal_box_head(self) -> nn.Module:
        return self.bbox_embed[self.num_layers]

    def forward(
        self,
        query: torch.Tensor,
        reference_boxes: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        valid_ratios: torch.Tensor,
        self_attn_mask: Optional[torch.Tensor] = None,
        return_sampling: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Args:
            query: (N, Q, C) content queries; reference_boxes: (N, Q, 4) (cx, cy, w, h) in
                [0, 1] of each image's valid region.
            memory: (N, S, C) encoder output; memory_padding_mask: (N, S).
            valid_ratios: (N, L, 2).
            self_attn_mask: (Q, Q) bool (denoising groups).
        Returns dict:
            logits (num_layers, N, Q, K), boxes (num_layers, N, Q, 4),
            references (num_layers, N, Q, 4): refined reference boxes after each layer,
            hidden_states (num_layers, N, Q, C): normalized layer outputs,
            and if `return_sampling`: sampling_locations (num_layers, N, Q, heads, L, P, 2),
            attention_weights (num_layers, N, Q, heads, L, P).
        """
        ratios = torch.cat([valid_ratios, valid_ratios], -1)[:, None]  # (N, 1, L, 4)
        x, ref, ref_for_output = query, reference_boxes, reference_boxes
        out = {k: [] for k in ("logits", "boxes", "references", "hidden_states")}
        sampling = []
        # the memory is the same for every layer: all value projections up front (one cast)
        if all(isinstance(layer, DeformableDecoderLayer) for layer in self.layers):
            projected = project_values(
                [layer.attentions[1] for layer in self.layers], memory, memory_padding_mask
            )
        else:
            projected = [None] * len(self.layers)
        for i, layer in enumerate(self.layers):
            ref_input = ref[:, :, None] * ratios
            query_pos = self.ref_point_head(
                get_sine_pos_embed(ref_input[:, :, 0], num_pos_feats=self.embed_dim // 2)
            )
            extra = {} if projected[i] is None else {"projected_memory": projected[i]}
            x, samp = layer(
                x,
                query_pos,
                memory,
                memory_padding_mask,
                ref_input,
                spatial_shapes,
                level_start_index,
                self_attn_mask,
                return_sampling,
                **extra,
            )
            refined = (self.bbox_embed[i](x) + inverse_sigmoid(ref)).sigmoid()
            hidden = self.norm(x)
            out["hidden_states"].append(hidden)
            out["logits"].append(self.class_embed[i](hidden))
            out["boxes"].append(
                (self.bbox_embed[i](hidden) + inverse_sigmoid(ref_for_output)).sigmoid()
            )
            out["references"].append(refined if self.look_forward_twice else refined.detach())
            ref = refined.detach()
            ref_for_output = refined if self.look_forward_twice else ref
            if samp is not None:
                sampling.append(samp)
        out = {k: torch.stack(v) for k, v in out.items()}
        if return_sampling:
            out["sampling_locations"] = torch.stack([s[0] for s in sampling])
            out["attention_weights"] = torch.stack([s[1] for s in sampling])
        return out
