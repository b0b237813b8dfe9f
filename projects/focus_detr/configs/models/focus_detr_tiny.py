"""A tiny Focus-DETR for CPU training from scratch: the tiny DINO of projects/dino (ResNet-18
layout at half width, embed dim 64, 3 decoder layers, 100 queries) with the Focus encoder: 2
dual-attention layers with cascade (1.0, 0.5) at keep ratio 0.3 (0.4 / 0.2 of the valid tokens)
and 100 object tokens (the number of queries; published: 300 of 900)."""

from focus_detr.modeling import FocusDETR
from focus_detr.modeling.encoders import focus_encoder_config

from ....dino.configs.models.dino_tiny import EMBED_DIM, model

model._target_ = FocusDETR
model.transformer.encoder = focus_encoder_config(
    embed_dim=EMBED_DIM,
    num_heads=4,
    feedforward_dim=4 * EMBED_DIM,
    dropout=0.0,
    num_levels=4,
    num_points=4,
    keep_ratio=0.3,
    cascade_ratios=(1.0, 0.5),
    num_object_tokens=100,
)
