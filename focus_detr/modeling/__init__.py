"""Models of the DINO family: backbone helpers, neck, transformer, matcher, criterion, denoising,
meta-architectures, checkpoint loading and the inference transforms (`optimize`)."""

from ..engine.published_checkpoints import (
    CheckpointMismatchError,
    DetrCheckpointer,
    register_key_alias,
)
from .criterion import DINOCriterion
from .denoising import ContrastiveDenoising, DenoisingMeta
from .matcher import HungarianMatcher
from .inference import instantiate_model, optimize
from .meta_arch import DINO, FocusDETR, add_dino_config, add_focus_detr_config
from .neck import ChannelMapper
from .transformer import (
    DeformableDecoderLayer,
    DeformableEncoder,
    DeformableEncoderLayer,
    DINODecoder,
    DINOTransformer,
    EncoderInputs,
    EncoderOutput,
)

__all__ = [
    "ChannelMapper",
    "CheckpointMismatchError",
    "ContrastiveDenoising",
    "DINO",
    "DINOCriterion",
    "DetrCheckpointer",
    "DINODecoder",
    "DINOTransformer",
    "DeformableDecoderLayer",
    "DeformableEncoder",
    "DeformableEncoderLayer",
    "DenoisingMeta",
    "EncoderInputs",
    "EncoderOutput",
    "FocusDETR",
    "HungarianMatcher",
    "add_dino_config",
    "add_focus_detr_config",
    "instantiate_model",
    "optimize",
    "register_key_alias",
]
