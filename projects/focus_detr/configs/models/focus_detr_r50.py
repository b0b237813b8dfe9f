"""Focus-DETR-R50, 4 scales (detrex's `focus_detr_r50_4scale_12ep` model): DINO-R50 with the
Focus encoder (foreground token selector, cascade keep ratios, dual attention).

Published defaults: keep_ratio 0.3 (0.5 x mean cascade), cascade (1, .8, .6, .6, .4, .2),
top-down modulation of the features before the score network, 300 object tokens ranked by the
product of raw logits, FCOS-like label assignment with the published ranges, select_loss 1.5."""

from focus_detr.modeling import FocusDETR
from focus_detr.modeling.encoders import focus_encoder_config
from focus_detr.modeling.focus import PUBLISHED_CASCADE_RATIOS
from focus_detr.modeling.transformer.multiscale import FOUR_SCALE_STRIDES

from ....dino.configs.models.dino_r50 import model

model._target_ = FocusDETR
model.transformer.encoder = focus_encoder_config(
    embed_dim=256,
    num_heads=8,
    feedforward_dim=2048,
    dropout=0.0,
    num_levels=4,
    num_points=4,
    keep_ratio=0.3,
    cascade_ratios=PUBLISHED_CASCADE_RATIOS,
    num_object_tokens=300,
    strides=FOUR_SCALE_STRIDES,
)
