"""Transformer parts of the DINO family; the encoder is swappable (see `encoder_api`)."""
from .decoder import DeformableDecoderLayer, DINODecoder, deformable_sampling
from .dino_transformer import DINOTransformer
from .encoder import DeformableEncoder, DeformableEncoderLayer
from .encoder_api import EncoderInputs, EncoderLossHooks, EncoderOutput

__all__ = [
    "DINODecoder",
    "DINOTransformer",
    "DeformableDecoderLayer",
    "DeformableEncoder",
    "DeformableEncoderLayer",
    "EncoderInputs",
    "EncoderLossHooks",
    "EncoderOutput",
    "deformable_sampling",
]
