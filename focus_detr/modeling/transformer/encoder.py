"""The dense deformable encoder of Deformable DETR / DINO, implementing the encoder contract."""

import copy
from typing import Optional

import torch
from torch import nn

from ...layers import FFN, MultiScaleDeformableAttention, init_deformable_transformer
from .encoder_api import EncoderInputs, EncoderOutput

__all__ = ["DeformableEncoderLayer", "DeformableEncoder"]


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: deformable attention (residual), LayerNorm, FFN (residual), LayerNorm.

    Submodule names follow detrex (`attentions.0`, `ffns.0`, `norms.0/1`).

    Args:
        embed_dim: channels. Default 256.
        num_heads: attention heads. Default 8.
        num_levels: feature levels. Default 4.
        num_points: sampling points per head and level. Default 4.
        feedforward_dim: FFN hidden channels. Default 2048.
        attn_dropout: dropout on the attention output. Default 0.0.
        ffn_dropout: dropout inside the FFN. Default 0.0.
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
                MultiScaleDeformableAttention(
                    embed_dim,
                    num_heads,
                    num_levels,
                    num_points,
                    dropout=attn_dropout,
                    batch_first=True,
                )
            ]
        )
        self.ffns = nn.ModuleList([FFN(embed_dim, feedforward_dim, ffn_dropout)])
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dim) for _ in range(2)])

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
        value: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Args:
            query: (N, Q, C) tokens to update; query_pos: (N, Q, C).
            reference_points: (N, Q, L, 2).
            padding_mask: (N, S) True at padded VALUE tokens.
            value: (N, S, C) token map to attend into; defaults to `query` (dense encoder; a
                sparse encoder passes its kept tokens as `query` and the full map here).
        Returns:
            (N, Q, C).
        """
        x = self.attentions[0](
            query,
            value=query if value is None else value,
            query_pos=query_pos,
            key_padding_mask=padding_mask,
            reference_points=reference_points,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
        )
        x = self.norms[0](x)
        return self.norms[1](self.ffns[0](x))


class DeformableEncoder(nn.Module):
    """Every token attends to the whole multi-scale map in each of `num_layers` copies of `layer`.

    Args:
        layer: the layer to replicate (e.g. a `DeformableEncoderLayer`).
        num_layers: number of layers. Default 6.
        post_norm: LayerNorm after the last layer. Default False (DINO).
    """

    selects_tokens = False  # every layer updates every token: outputs carry no selection

    def __init__(self, layer: nn.Module, num_layers: int = 6, post_norm: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.embed_dim = layer.embed_dim
        self.post_norm_layer = nn.LayerNorm(self.embed_dim) if post_norm else None
        self.init_weights()

    def init_weights(self):
        """Xavier-uniform matrices, then Deformable-DETR's init of the attention modules."""
        init_deformable_transformer(self)

    def forward(self, inputs: EncoderInputs) -> EncoderOutput:
        x = inputs.tokens
        for layer in self.layers:
            x = layer(
                x,
                inputs.pos,
                inputs.reference_points,
                inputs.spatial_shapes,
                inputs.level_start_index,
                inputs.padding_mask,
            )
        if self.post_norm_layer is not None:
            x = self.post_norm_layer(x)
        return EncoderOutput(memory=x)
