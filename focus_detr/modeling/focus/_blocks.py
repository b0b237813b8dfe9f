"""Minimal self-attention / feed-forward blocks with detrex's submodule names.

Temporary stand-ins with the API of `focus_detr.layers.MultiheadAttention` / `FFN` (being written
on the DINO branch); they will be replaced by those (same state-dict keys).
"""
from typing import Optional

import torch
from torch import nn


class _MultiheadAttention(nn.Module):
    """`nn.MultiheadAttention` (as `attn`): q = k = x + pos, v = x; returns x + dropout(attention)."""

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, batch_first: bool = True):
        super().__init__()
        self.embed_dim = embed_dim
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=attn_drop,
                                          batch_first=batch_first)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, query: torch.Tensor, query_pos: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None,
                key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        qk = query if query_pos is None else query + query_pos
        out = self.attn(qk, qk, query, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                        need_weights=False)[0]
        return query + self.proj_drop(out)


class _FFN(nn.Module):
    """x + Dropout(Linear(Dropout(ReLU(Linear(x))))) with detrex's `layers` structure."""

    def __init__(self, embed_dim: int = 256, feedforward_dim: int = 2048, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dim, feedforward_dim), nn.ReLU(), nn.Dropout(dropout)),
            nn.Linear(feedforward_dim, embed_dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, identity: Optional[torch.Tensor] = None) -> torch.Tensor:
        return (x if identity is None else identity) + self.layers(x)
