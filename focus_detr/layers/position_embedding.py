"""Sine position embeddings: the 2-d map embedding of the encoder tokens and the box embedding of
the decoder queries (DAB-DETR / DINO)."""

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine", "get_sine_pos_embed"]


def _frequencies(num_feats: int, temperature: float, device) -> torch.Tensor:
    # dims 2i and 2i+1 share the frequency temperature ** (2i / num_feats)
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(x: torch.Tensor) -> torch.Tensor:
    """(..., F) -> (..., F): sin of the even features, cos of the odd ones, interleaved."""
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """DETR's sine embedding of a padded feature map: (y features, x features) per pixel.

    Coordinates count valid pixels (cumulative sum of the not-padded mask), so the embedding of an
    image does not depend on how much padding the batch adds.

    Args:
        num_pos_feats: features per axis; the output has 2 * num_pos_feats channels. Default 128.
        temperature: base of the frequency progression. Default 10000 (DINO 12ep; 20 from 24ep on).
        normalize: divide coordinates by the valid extent and multiply by `scale`. Default True.
        scale: range of normalized coordinates. Default 2*pi.
        eps: added to the valid extent before dividing. Default 1e-6.
        offset: added to the (1-based) coordinates before normalizing. Default -0.5 (DINO 12ep;
            0.0 from 24ep on).
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000,
        normalize: bool = True,
        scale: float = 2 * math.pi,
        eps: float = 1e-6,
        offset: float = -0.5,
    ):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps
        self.offset = offset

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """mask: (N, H, W) bool, True at padding. Returns (N, 2 * num_pos_feats, H, W)."""
        not_mask = ~mask
        y = not_mask.cumsum(1, dtype=torch.float32)
        x = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            y = (y + self.offset) / (y[:, -1:, :] + self.eps) * self.scale
            x = (x + self.offset) / (x[:, :, -1:] + self.eps) * self.scale
        dim_t = _frequencies(self.num_pos_feats, self.temperature, mask.device)
        pos_x = _interleave_sin_cos(x[..., None] / dim_t)
        pos_y = _interleave_sin_cos(y[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=-1).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, offset={self.offset}"
        )


def get_sine_pos_embed(
    pos: torch.Tensor,
    num_pos_feats: int = 128,
    temperature: float = 10000,
    exchange_xy: bool = True,
) -> torch.Tensor:
    """Sine embedding of normalized coordinates, each scaled by 2*pi.

    Args:
        pos: (..., n) coordinates in [0, 1], e.g. boxes (cx, cy, w, h).
        num_pos_feats: features per coordinate.
        temperature: base of the frequency progression.
        exchange_xy: put the embedding of coordinate 1 (y) before that of coordinate 0 (x), as
            DAB-DETR does.

    Returns:
        (..., n * num_pos_feats).
    """
    dim_t = _frequencies(num_pos_feats, temperature, pos.device)
    embed = _interleave_sin_cos(pos[..., None] * (2 * math.pi) / dim_t)  # (..., n, F)
    if exchange_xy and pos.shape[-1] >= 2:
        order = [1, 0] + list(range(2, pos.shape[-1]))
        embed = embed[..., order, :]
    return embed.flatten(-2)
