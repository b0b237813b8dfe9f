"""ResNet stages for detectron2's `ResNet` with a configurable width (small CPU models)."""

from typing import List

from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet

__all__ = ["make_resnet_stages", "resnet_out_channels"]

_BLOCKS = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


def resnet_out_channels(depth: int, width: int = 64) -> List[int]:
    """Output channels of res2..res5 for a ResNet of `depth` whose stem has `width` channels."""
    expansion = 1 if depth < 50 else 4
    return [width * expansion * 2**i for i in range(4)]


def make_resnet_stages(
    depth: int = 50,
    width: int = 64,
    norm: str = "FrozenBN",
    stride_in_1x1: bool = False,
    num_stages: int = 4,
):
    """detectron2 ResNet stages res2.. with every channel count scaled by `width / 64`.

    With width 64 this equals `ResNet.make_default_stages(depth, norm=norm, ...)` (same module
    names, so detectron2 / torchvision ImageNet checkpoints load).

    Args:
        depth: 18, 34 (basic blocks), 50, 101, 152 (bottlenecks).
        width: channels of the stem output and of res2's bottleneck (64 in the standard nets).
        norm: detectron2 norm name. Default "FrozenBN".
        stride_in_1x1: bottleneck stride in the 1x1 conv (MSRA) instead of the 3x3 (torchvision).
        num_stages: build res2 .. res{num_stages + 1}.
    """
    if depth not in _BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(_BLOCKS)}, got {depth}")
    basic = depth < 50
    outs = resnet_out_channels(depth, width)
    stages = []
    in_channels = width
    for i, blocks in enumerate(_BLOCKS[depth][:num_stages]):
        kwargs = dict(
            block_class=BasicBlock if basic else BottleneckBlock,
            num_blocks=blocks,
            stride_per_block=[1 if i == 0 else 2] + [1] * (blocks - 1),
            in_channels=in_channels,
            out_channels=outs[i],
            norm=norm,
        )
        if not basic:
            kwargs.update(bottleneck_channels=width * 2**i, stride_in_1x1=stride_in_1x1)
        stages.append(ResNet.make_stage(**kwargs))
        in_channels = outs[i]
    return stages
