"""Focus-DETR as a detectron2 meta-architecture: DINO whose transformer encoder is a `FocusEncoder`
(foreground token selector, cascade, dual attention). Its foreground loss (`select_loss`) comes
with the encoder (`FocusEncoder.losses`), added by DINO's training step."""

from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from ..focus import (
    PUBLISHED_CASCADE_RATIOS,
    DualAttentionEncoderLayer,
    FocusEncoder,
    ForegroundLabelAssigner,
    ForegroundLoss,
    ForegroundTokenSelector,
    TokenScoreNetwork,
)
from ..transformer.multiscale import FOUR_SCALE_STRIDES
from .dino_config import add_dino_config, dino_kwargs_from_cfg
from .dino import DINO

__all__ = ["FocusDETR", "add_focus_detr_config"]


@META_ARCH_REGISTRY.register()
class FocusDETR(DINO):
    """DINO with the Focus encoder; takes DINO's arguments (see `DINO`). The encoder must be a
    `FocusEncoder` (it scores tokens with the transformer's two-stage projection and shares the
    decoder's proposal class head, both handed over through `EncoderInputs`)."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        encoder = self.transformer.encoder
        if not isinstance(encoder, FocusEncoder):
            raise TypeError(
                f"FocusDETR needs transformer.encoder to be a FocusEncoder, got "
                f"{type(encoder).__name__}"
            )
        strides = getattr(self.neck, "strides", None)
        assigned = encoder.foreground_loss.assigner.strides
        if strides is not None and tuple(strides) != assigned:
            raise ValueError(
                f"label assignment strides {assigned} differ from the neck's {tuple(strides)}"
            )

    @classmethod
    def from_config(cls, cfg):
        kwargs = dino_kwargs_from_cfg(cfg)
        kwargs["transformer"].encoder = build_focus_encoder(cfg)
        return kwargs


def add_focus_detr_config(cfg: CN) -> CN:
    """Add `MODEL.DINO` (via `add_dino_config`) and `MODEL.FOCUS_DETR` (published defaults)."""
    add_dino_config(cfg)
    f = cfg.MODEL.FOCUS_DETR = CN()
    f.KEEP_RATIO = 0.3
    f.CASCADE_RATIOS = list(PUBLISHED_CASCADE_RATIOS)
    f.MODULATION = "top_down"
    f.MODULATION_TARGET = "features"
    f.NUM_OBJECT_TOKENS = 300
    f.OBJECT_SCORE = "logit_product"
    f.STRIDES = list(FOUR_SCALE_STRIDES)
    f.SCALE_RANGES = [[-1.0, 64.0], [64.0, 128.0], [128.0, 256.0], [256.0, float("inf")]]
    f.SIZE_MEASURE = "max_side_distance"
    f.SELECT_LOSS_WEIGHT = 1.5
    cfg.MODEL.META_ARCHITECTURE = "FocusDETR"
    return cfg


def build_focus_encoder(cfg: CN) -> FocusEncoder:
    d, f = cfg.MODEL.DINO, cfg.MODEL.FOCUS_DETR
    if len(f.CASCADE_RATIOS) != d.ENC_LAYERS:
        raise ValueError(
            f"MODEL.FOCUS_DETR.CASCADE_RATIOS has {len(f.CASCADE_RATIOS)} entries "
            f"for {d.ENC_LAYERS} encoder layers"
        )
    return FocusEncoder(
        selector=ForegroundTokenSelector(
            TokenScoreNetwork(d.HIDDEN_DIM, d.HIDDEN_DIM),
            num_levels=d.NUM_FEATURE_LEVELS,
            modulation=f.MODULATION,
            modulation_target=f.MODULATION_TARGET,
            keep_ratio=f.KEEP_RATIO,
            cascade_ratios=tuple(f.CASCADE_RATIOS),
            padding=d.PADDING,
        ),
        layer=DualAttentionEncoderLayer(
            d.HIDDEN_DIM,
            d.NUM_HEADS,
            d.DIM_FEEDFORWARD,
            d.DROPOUT,
            d.NUM_FEATURE_LEVELS,
            d.NUM_POINTS,
            f.NUM_OBJECT_TOKENS,
            f.OBJECT_SCORE,
        ),
        foreground_loss=ForegroundLoss(
            ForegroundLabelAssigner(f.STRIDES, [tuple(r) for r in f.SCALE_RANGES], f.SIZE_MEASURE),
            weight=f.SELECT_LOSS_WEIGHT,
            padding=d.PADDING,
        ),
    )
