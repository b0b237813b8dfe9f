"""Transformer parts of the DINO family; the encoder is swappable (see `encoder_api`)."""

from .decoder import DeformableDecoderLayer, DINODecoder, deformable_sampling
from .dino_transformer import DINOTransformer
from .encoder import DeformableEncoder, DeformableEncoderLayer
from .encoder_api import (
    PADDING_MODES,
    EncoderInputs,
    EncoderOutput,
    TokenSelection,
    check_padding_mode,
    encoder_selects_tokens,
    index_masks,
)

__all__ = [
    "DINODecoder",
    "DINOTransformer",
    "DeformableDecoderLayer",
    "DeformableEncoder",
    "DeformableEncoderLayer",
    "EncoderInputs",
    "EncoderOutput",
    "PADDING_MODES",
    "TokenSelection",
    "check_padding_mode",
    "deformable_sampling",
    "encoder_selects_tokens",
    "index_masks",
]
