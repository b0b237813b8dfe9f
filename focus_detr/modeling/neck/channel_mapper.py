"""Channel mapper neck: maps backbone levels to one width and adds strided extra levels."""

import copy
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.layers import ShapeSpec
from torch import nn

__all__ = ["ChannelMapper", "ConvNorm"]


class ConvNorm(nn.Module):
    """Conv2d followed by an optional norm and activation (submodules `conv`, `norm`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        norm: Optional[nn.Module] = None,
        activation: Optional[nn.Module] = None,
        bias: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            bias=bias,
        )
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class ChannelMapper(nn.Module):
    """One conv + norm per input level to `out_channels`; then `num_outs - len(in_features)` extra
    levels, each a 3x3 stride-2 conv + norm, the first on the LAST INPUT feature (the backbone's
    coarsest map, as DINO does), the next ones on the previous extra level.

    Args:
        input_shapes: backbone output shapes by name (channels and stride are read).
        in_features: names of the levels to map, finest first.
        out_channels: output channels of every level. Default 256.
        num_outs: number of output levels (>= len(in_features)). Default: len(in_features).
        kernel_size: kernel of the per-level convs. Default 1.
        norm: a module to copy into every level (e.g. `nn.GroupNorm(32, 256)`), or None.
        activation: a module to copy into every level, or None.
        initialize: Xavier-uniform conv weights and zero biases (DINO's init). Default True.

    Forward: dict of (N, C_l, H_l, W_l) -> list of `num_outs` (N, out_channels, h, w).
    """

    def __init__(
        self,
        input_shapes: Dict[str, ShapeSpec],
        in_features: List[str],
        out_channels: int = 256,
        num_outs: Optional[int] = None,
        kernel_size: int = 1,
        norm: Optional[nn.Module] = None,
        activation: Optional[nn.Module] = None,
        initialize: bool = True,
    ):
        super().__init__()
        missing = [f for f in in_features if f not in input_shapes]
        if missing:
            raise ValueError(
                f"in_features {missing} not among the backbone outputs {sorted(input_shapes)}"
            )
        num_outs = len(in_features) if num_outs is None else num_outs
        if num_outs < len(in_features):
            raise ValueError(f"num_outs ({num_outs}) < number of in_features ({len(in_features)})")
        self.in_features = list(in_features)
        self.out_channels = out_channels
        channels = [input_shapes[f].channels for f in in_features]
        self.convs = nn.ModuleList(
            ConvNorm(
                c,
                out_channels,
                kernel_size,
                norm=copy.deepcopy(norm),
                activation=copy.deepcopy(activation),
            )
            for c in channels
        )
        extra_in = [channels[-1]] + [out_channels] * (num_outs - len(in_features) - 1)
        self.extra_convs = nn.ModuleList(
            ConvNorm(
                c,
                out_channels,
                3,
                stride=2,
                norm=copy.deepcopy(norm),
                activation=copy.deepcopy(activation),
            )
            for c in extra_in[: num_outs - len(in_features)]
        )
        strides = [input_shapes[f].stride for f in in_features]
        # strides are optional in the shapes; when given, every extra level halves the last one
        self.strides = (
            None
            if None in strides
            else strides + [strides[-1] * 2 ** (i + 1) for i in range(len(self.extra_convs))]
        )
        if initialize:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, features: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        outs = [conv(features[f]) for conv, f in zip(self.convs, self.in_features)]
        x = features[self.in_features[-1]]
        for conv in self.extra_convs:
            x = conv(x)
            outs.append(x)
        return outs

    def output_shape(self) -> Tuple[ShapeSpec, ...]:
        strides = self.strides or [None] * (len(self.convs) + len(self.extra_convs))
        return tuple(ShapeSpec(channels=self.out_channels, stride=s) for s in strides)
