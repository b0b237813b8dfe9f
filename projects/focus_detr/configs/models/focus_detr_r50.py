"""Focus-DETR-R50, 4 scales (detrex's `focus_detr_r50_4scale_12ep` model): DINO-R50 with the
Focus encoder (foreground token selector, cascade keep ratios, dual attention).

Published defaults: keep_ratio 0.3 (0.5 x mean cascade), cascade (1, .8, .6, .6, .4, .2),
top-down modulation of the features before the score network, 300 object tokens ranked by the
product of raw logits, FCOS-like label assignment with the published ranges, select_loss 1.5."""
from detectron2.config import LazyCall as L

from focus_detr.modeling import FocusDETR
from focus_detr.modeling.focus import (
    PUBLISHED_SCALE_RANGES,
    DualAttentionEncoderLayer,
    FocusEncoder,
    ForegroundLabelAssigner,
    ForegroundLoss,
    ForegroundTokenSelector,
    TokenScoreNetwork,
)

from ....dino.configs.models.dino_r50 import model

model._target_ = FocusDETR
model.transformer.encoder = L(FocusEncoder)(
    selector=L(ForegroundTokenSelector)(
        score_network=L(TokenScoreNetwork)(in_dim=256, hidden_dim=256),
        num_levels=4,
        modulation="top_down",
        modulation_target="features",  # "logits": the variant where coarse scores reach fine ones
        coefficient_init_range=0.3,
        keep_ratio=0.3,
        cascade_ratios=(1.0, 0.8, 0.6, 0.6, 0.4, 0.2),
    ),
    layer=L(DualAttentionEncoderLayer)(
        embed_dim=256, num_heads=8, feedforward_dim=2048, dropout=0.0, num_levels=4,
        num_points=4, num_object_tokens=300, object_score="logit_product"),
    foreground_loss=L(ForegroundLoss)(
        assigner=L(ForegroundLabelAssigner)(
            strides=(8, 16, 32, 64), scale_ranges=PUBLISHED_SCALE_RANGES,
            size_measure="max_side_distance"),
        weight=1.5, alpha=0.25, gamma=2.0, name="select_loss"),
)
