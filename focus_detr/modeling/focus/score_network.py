"""`TokenScoreNetwork`: the per-token foreground scorer of Sparse DETR, shared by Focus-DETR.

Sparse DETR calls it the "mask predictor"; Focus-DETR uses one instance for every feature level
(its MLP_F). The submodule names (`layer1`, `layer2`) are the published ones, so the published
weights load without renaming inside this module.
"""

from typing import Optional

import torch
from torch import nn

__all__ = ["TokenScoreNetwork"]


class TokenScoreNetwork(nn.Module):
    """LayerNorm -> Linear -> GELU, then a local half per token and a global half mean-pooled over
    the (valid) tokens of the input, then an MLP hidden -> hidden/2 -> hidden/4 -> 1 with GELU.

    Args:
        in_dim: token channels. Default 256.
        hidden_dim: width after the first Linear; must be divisible by 4. Default 256.
    """

    def __init__(self, in_dim: int = 256, hidden_dim: int = 256):
        super().__init__()
        if hidden_dim % 4 != 0:
            raise ValueError(f"hidden_dim must be divisible by 4, got {hidden_dim}")
        self.hidden_dim = hidden_dim
        self.layer1 = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden_dim), nn.GELU())
        self.layer2 = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim // 2),
            nn.GELU(),
            nn.Linear(hidden_dim // 2, hidden_dim // 4),
            nn.GELU(),
            nn.Linear(hidden_dim // 4, 1),
        )

    def forward(
        self, tokens: torch.Tensor, valid_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Score every token.

        Args:
            tokens: (N, T, in_dim) tokens of one pooling group (one feature level in Focus-DETR,
                all levels in Sparse DETR).
            valid_mask: (N, T) bool, True at real tokens. The global half is averaged over valid
                tokens only, so padding does not leak into real tokens' scores. None = all valid
                (then identical to the published plain mean).

        Returns:
            (N, T) raw logits (no sigmoid). Scores of invalid tokens are computed but meaningless.
        """
        z = self.layer1(tokens)
        half = self.hidden_dim // 2
        z_local, z_global = z[..., :half], z[..., half:]
        if valid_mask is None:
            pooled = z_global.mean(dim=1, keepdim=True)
        else:
            weight = valid_mask.to(z.dtype).unsqueeze(-1)
            count = weight.sum(dim=1, keepdim=True).clamp(min=1.0)
            pooled = (z_global * weight).sum(dim=1, keepdim=True) / count
        z = torch.cat([z_local, pooled.expand_as(z_global)], dim=-1)
        return self.layer2(z).squeeze(-1)
