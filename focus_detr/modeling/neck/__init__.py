from .channel_mapper import ChannelMapper, ConvNorm

__all__ = ["ChannelMapper", "ConvNorm"]
