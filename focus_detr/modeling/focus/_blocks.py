"""Minimal attention / feed-forward blocks with detrex's submodule names.

Temporary: they stand in for the generic layers of `focus_detr.layers` until those exist, and
will be replaced by them (same names, same state-dict keys).
"""
from typing import Optional

import torch
from torch import nn


class _MultiheadAttention(nn.Module):
    """`nn.MultiheadAttention` (as `attn`) with position embeddings and a residual:
    returns identity + dropout(attn(query + query_pos, key + key_pos, value))."""

    def __init__(self, embed_dim: int, num_heads: int, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, batch_first: bool = True):
        super().__init__()
        self.embed_dim = embed_dim
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=attn_drop,
                                          batch_first=batch_first)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, query: torch.Tensor, key: Optional[torch.Tensor] = None,
                value: Optional[torch.Tensor] = None, identity: Optional[torch.Tensor] = None,
                query_pos: Optional[torch.Tensor] = None, key_pos: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None,
                key_padding_mask: Optional[torch.Tensor] = None, **kwargs) -> torch.Tensor:
        key = query if key is None else key
        value = key if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if key_pos is not None:
            key = key + key_pos
        out = self.attn(query, key, value, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                        need_weights=False)[0]
        return identity + self.proj_drop(out)


class _FFN(nn.Module):
    """x + Linear(Dropout(act(Linear(x)))) with detrex's `layers` structure."""

    def __init__(self, embed_dim: int = 256, feedforward_dim: int = 1024, ffn_drop: float = 0.0):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dim, feedforward_dim), nn.ReLU(inplace=True),
                          nn.Dropout(ffn_drop)),
            nn.Linear(feedforward_dim, embed_dim),
            nn.Dropout(ffn_drop),
        )

    def forward(self, x: torch.Tensor, identity: Optional[torch.Tensor] = None) -> torch.Tensor:
        return (x if identity is None else identity) + self.layers(x)
