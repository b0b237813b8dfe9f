"""Transformer parts of the DINO family; the encoder is swappable (see `encoder_api`)."""
from .decoder import DeformableDecoderLayer, DINODecoder, deformable_sampling
from .dino_transformer import DINOTransformer
from .encoder import DeformableEncoder, DeformableEncoderLayer
from .encoder_api import (PADDING_MODES, EncoderInputs, EncoderLossHooks, EncoderOutput,
                          check_padding_mode)

__all__ = [
    "DINODecoder",
    "DINOTransformer",
    "DeformableDecoderLayer",
    "DeformableEncoder",
    "DeformableEncoderLayer",
    "EncoderInputs",
    "EncoderLossHooks",
    "EncoderOutput",
    "PADDING_MODES",
    "check_padding_mode",
    "deformable_sampling",
]
