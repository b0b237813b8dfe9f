"""`SwinTransformer`: the Swin Transformer backbone (Liu et al., ICCV 2021) as detectron2 and detrex
build it for detection, so that the published Swin-based checkpoints load and compute the same.

Layout and names follow detectron2's `SwinTransformer` (which detrex's Swin configs use):
`patch_embed` (4x4 patch convolution + LayerNorm), `layers.{i}` stages of `blocks.{j}` (window
attention with a relative position bias, alternate blocks shifted by half a window) each ending
in a `downsample` patch merging (except the last), and a LayerNorm `norm{i}` on every output
stage i. Any input size: the patch embedding pads the image to whole patches, each block pads its
map to whole windows after its first norm (zeros), the shifted blocks mask attention between
regions that the cyclic shift made neighbours, and patch merging pads odd sizes.
"""

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from torch import nn

__all__ = ["SwinTransformer"]

_MASKED = -100.0  # attention logit added between regions that only the cyclic shift joined


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of `size` -> (B * windows, size * size, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).transpose(2, 3)
    return x.reshape(-1, size * size, c)


def _unwindows(windows: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `_windows`: (B * windows, size * size, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // size, w // size, size, size, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


def _drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the residual branch of whole samples with probability `rate`."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside square windows, with a learnt bias per relative offset
    (table of (2 * window - 1)^2 offsets x heads) and an optional additive mask per window."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        span = 2 * window_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(span * span, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        dy = ys.flatten()[:, None] - ys.flatten()[None]  # (window^2, window^2) offsets
        dx = xs.flatten()[:, None] - xs.flatten()[None]
        # persistent: the published checkpoints carry it
        self.register_buffer(
            "relative_position_index", (dy + window_size - 1) * span + (dx + window_size - 1)
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B * windows, window^2, C); mask: (windows, window^2, window^2) additive or None."""
        n, tokens, c = x.shape
        q, k, v = self.qkv(x).view(n, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(tokens, tokens, -1).permute(2, 0, 1)  # (heads, window^2, window^2)
        if mask is not None:  # windows are image-major: window w of every image shares mask[w]
            windows = mask.shape[0]
            bias = bias[None] + mask[:, None]  # (windows, heads, window^2, window^2)
            q, k, v = (t.view(n // windows, windows, *t.shape[1:]) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(
            out.reshape(n, self.num_heads, tokens, -1).transpose(1, 2).reshape(n, tokens, c)
        )


class SwinBlock(nn.Module):
    """norm1 -> (shifted) window attention -> residual; norm2 -> MLP (GELU) -> residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.window_size, self.shift, self.drop_path = window_size, shift, drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential()  # named fc1 / fc2 as in the published checkpoints
        self.mlp.add_module("fc1", nn.Linear(dim, hidden))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C); shift_mask: the stage's mask for shifted windows (unused unshifted)."""
        b, h, w, c = x.shape
        size = self.window_size
        y = F.pad(self.norm1(x), (0, 0, 0, (-w) % size, 0, (-h) % size))
        hp, wp = y.shape[1:3]
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(_windows(y, size), shift_mask if self.shift else None)
        y = _unwindows(y, size, hp, wp)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + _drop_path(y[:, :h, :w], self.drop_path, self.training)
        return x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated ((0,0), (1,0), (0,1), (1,1) as (row, column)), LayerNorm,
    linear 4C -> 2C without bias; odd sizes padded with zeros."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """`depth` blocks (odd ones shifted by half a window) and an optional patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_paths: Sequence[float],
        downsample: bool,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift = window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads,
                window_size,
                self.shift if j % 2 else 0,
                mlp_ratio,
                qkv_bias,
                drop_paths[j],
            )
            for j in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def shift_mask(self, h: int, w: int, device) -> torch.Tensor:
        """(windows, window^2, window^2): `_MASKED` between tokens of one shifted window that
        come from different regions of the padded (Hp, Wp) map (3 x 3 regions cut at
        -window and -shift on each axis), 0 elsewhere."""
        size, shift = self.window_size, self.shift
        hp, wp = -(-h // size) * size, -(-w // size) * size

        def bands(length):  # region id along one axis: 0, 1, 2 at the cuts
            ids = torch.zeros(length, device=device)
            ids[length - size :] = 1
            ids[length - shift :] = 2
            return ids

        region = (bands(hp)[:, None] * 3 + bands(wp)[None])[None, :, :, None]
        region = _windows(region, size)[..., 0]  # (windows, window^2)
        differs = region[:, :, None] != region[:, None, :]
        return differs.float() * _MASKED

    def forward(self, x: torch.Tensor):
        """x: (B, H, W, C) -> (this stage's output (B, H, W, C), next stage's input)."""
        mask = self.shift_mask(x.shape[1], x.shape[2], x.device)
        for block in self.blocks:
            x = block(x, mask)
        return x, (self.downsample(x) if self.downsample is not None else x)


class SwinTransformer(Backbone):
    """Args (detectron2's names and defaults; the Swin-T of the published configs is the
    default with drop_path_rate=0.1 and out_indices=(1, 2, 3)):
        pretrain_img_size: accepted for config compatibility (only absolute position
            embeddings would use it; Swin detectors use none). Default 224.
        patch_size: 4. in_chans: 3. embed_dim: channels of stage 0, doubled per stage. 96.
        depths: blocks per stage. (2, 2, 6, 2). num_heads: per stage. (3, 6, 12, 24).
        window_size: 7. mlp_ratio: 4.0. qkv_bias: True.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this. Default 0.2.
        patch_norm: LayerNorm after the patch embedding. Default True.
        out_indices: stages returned as "p{i}" (stride 2^(i+2), embed_dim * 2^i channels), each
            through its LayerNorm `norm{i}`. Default (0, 1, 2, 3).
    """

    def __init__(
        self,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.2,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(
                f"depths {tuple(depths)} and num_heads {tuple(num_heads)} must "
                "have one entry per stage"
            )
        if not out_indices or any(not 0 <= i < len(depths) for i in out_indices):
            raise ValueError(
                f"out_indices {tuple(out_indices)} must name stages 0..{len(depths) - 1}"
            )
        self.patch_size = patch_size
        self.out_indices = tuple(out_indices)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.patch_embed.norm = nn.LayerNorm(embed_dim) if patch_norm else nn.Identity()
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            first = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    embed_dim * 2**i,
                    depth,
                    heads,
                    window_size,
                    mlp_ratio,
                    qkv_bias,
                    rates[first : first + depth],
                    downsample=i < len(depths) - 1,
                )
            )
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(embed_dim * 2**i))
        self._out_features = [f"p{i}" for i in self.out_indices]
        self._out_feature_channels = {f"p{i}": embed_dim * 2**i for i in self.out_indices}
        self._out_feature_strides = {f"p{i}": patch_size * 2**i for i in self.out_indices}
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (N, 3, H, W) -> {"p{i}": (N, C_i, ceil(H / 2^(i+2)), ceil(W / 2^(i+2)))}."""
        p = self.patch_size
        x = F.pad(x, (0, (-x.shape[-1]) % p, 0, (-x.shape[-2]) % p))
        x = self.patch_embed.norm(self.patch_embed.proj(x).permute(0, 2, 3, 1))  # (N, H, W, C)
        outputs: Dict[str, torch.Tensor] = {}
        for i, stage in enumerate(self.layers):
            out, x = stage(x)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outputs[f"p{i}"] = out.permute(0, 3, 1, 2).contiguous()
        return outputs
