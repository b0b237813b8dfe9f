"""Multi-head self-attention with position embeddings and a residual (the DETR decoder's)."""

from typing import Optional

import torch
from torch import nn

__all__ = ["MultiheadAttention"]


class MultiheadAttention(nn.Module):
    """`torch.nn.MultiheadAttention` (as submodule `attn`, detrex's name) with q = k = x + pos,
    v = x, and output identity + dropout(attention).

    Args:
        embed_dim: channels. Default 256.
        num_heads: heads. Default 8.
        attn_drop: dropout on the attention weights. Default 0.0.
        proj_drop: dropout on the output. Default 0.0.
        batch_first: (N, L, C) inputs if True, else (L, N, C). Default True.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        batch_first: bool = True,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.attn = nn.MultiheadAttention(
            embed_dim, num_heads, dropout=attn_drop, batch_first=batch_first
        )
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        query: torch.Tensor,
        query_pos: Optional[torch.Tensor] = None,
        attn_mask: Optional[torch.Tensor] = None,
        key_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Self-attention over `query` (N, L, C).

        Args:
            attn_mask: (L, L) bool, True where query i may NOT attend to key j.
            key_padding_mask: (N, L) bool, True at keys to ignore.
        """
        qk = query if query_pos is None else query + query_pos
        out = self.attn(
            qk,
            qk,
            query,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=False,
        )[0]
        return query + self.proj_drop(out)
