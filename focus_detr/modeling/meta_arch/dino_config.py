"""yacs (CfgNode) support: `add_dino_config(cfg)` adds `cfg.MODEL.DINO`; with
`cfg.MODEL.META_ARCHITECTURE = "DINO"`, detectron2's `build_model(cfg)` builds the same model as
the LazyConfig `projects/dino/configs/models/dino_r50.py` (backbone from `cfg.MODEL.RESNETS`)."""

from detectron2.config import CfgNode as CN
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from torch import nn

from ...layers import PositionEmbeddingSine
from ..criterion import DINOCriterion
from ..denoising import ContrastiveDenoising
from ..matcher import HungarianMatcher
from ..neck import ChannelMapper
from ..transformer import (
    DeformableDecoderLayer,
    DeformableEncoder,
    DeformableEncoderLayer,
    DINODecoder,
    DINOTransformer,
)

__all__ = ["add_dino_config", "dino_kwargs_from_cfg"]


def add_dino_config(cfg: CN) -> CN:
    """Add `MODEL.DINO` (defaults: DINO-R50 4-scale 12ep) and set the ResNet backbone defaults
    DINO uses (FrozenBN, res3-res5, stride in the 3x3 conv). Returns cfg."""
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.BACKBONE.FREEZE_AT = 1
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.280, 103.530]
    cfg.MODEL.PIXEL_STD = [58.395, 57.120, 57.375]
    cfg.INPUT.FORMAT = "RGB"
    d = cfg.MODEL.DINO = CN()
    d.NUM_CLASSES = 80
    d.HIDDEN_DIM = 256
    d.NUM_FEATURE_LEVELS = 4
    d.NUM_HEADS = 8
    d.NUM_POINTS = 4
    d.DIM_FEEDFORWARD = 2048
    d.DROPOUT = 0.0
    d.ENC_LAYERS = 6
    d.DEC_LAYERS = 6
    d.NUM_QUERIES = 900
    # how training treats padded tokens (DINOTransformer, Focus selector and loss)
    d.PADDING = "published"
    d.POS_TEMPERATURE = 10000.0
    d.POS_OFFSET = -0.5
    d.DN_NUMBER = 100
    d.LABEL_NOISE_RATIO = 0.5
    d.BOX_NOISE_SCALE = 1.0
    d.COST_CLASS = 2.0
    d.COST_BBOX = 5.0
    d.COST_GIOU = 2.0
    d.CLASS_WEIGHT = 1.0
    d.BBOX_WEIGHT = 5.0
    d.GIOU_WEIGHT = 2.0
    d.FOCAL_ALPHA = 0.25
    d.FOCAL_GAMMA = 2.0
    d.SELECT_BOX_NUMS_FOR_EVALUATION = 300
    return cfg


def dino_kwargs_from_cfg(cfg: CN) -> dict:
    """Keyword arguments of `DINO.__init__` built from a CfgNode prepared by `add_dino_config`."""
    d = cfg.MODEL.DINO
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    in_features = list(cfg.MODEL.RESNETS.OUT_FEATURES)
    neck = ChannelMapper(
        {f: ShapeSpec(channels=shapes[f].channels, stride=shapes[f].stride) for f in in_features},
        in_features,
        d.HIDDEN_DIM,
        num_outs=d.NUM_FEATURE_LEVELS,
        norm=nn.GroupNorm(32, d.HIDDEN_DIM),
    )
    layer_args = dict(
        embed_dim=d.HIDDEN_DIM,
        num_heads=d.NUM_HEADS,
        num_levels=d.NUM_FEATURE_LEVELS,
        num_points=d.NUM_POINTS,
        feedforward_dim=d.DIM_FEEDFORWARD,
        attn_dropout=d.DROPOUT,
        ffn_dropout=d.DROPOUT,
    )
    transformer = DINOTransformer(
        encoder=DeformableEncoder(DeformableEncoderLayer(**layer_args), d.ENC_LAYERS),
        decoder=DINODecoder(DeformableDecoderLayer(**layer_args), d.DEC_LAYERS, d.NUM_CLASSES),
        num_feature_levels=d.NUM_FEATURE_LEVELS,
        num_queries=d.NUM_QUERIES,
        padding=d.PADDING,
    )
    matcher = HungarianMatcher(d.COST_CLASS, d.COST_BBOX, d.COST_GIOU, d.FOCAL_ALPHA, d.FOCAL_GAMMA)
    criterion = DINOCriterion(
        d.NUM_CLASSES,
        matcher,
        {"loss_class": d.CLASS_WEIGHT, "loss_bbox": d.BBOX_WEIGHT, "loss_giou": d.GIOU_WEIGHT},
        d.FOCAL_ALPHA,
        d.FOCAL_GAMMA,
    )
    return dict(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(
            d.HIDDEN_DIM // 2, d.POS_TEMPERATURE, normalize=True, offset=d.POS_OFFSET
        ),
        neck=neck,
        transformer=transformer,
        criterion=criterion,
        denoising=ContrastiveDenoising(
            d.NUM_CLASSES, d.DN_NUMBER, d.LABEL_NOISE_RATIO, d.BOX_NOISE_SCALE
        ),
        num_classes=d.NUM_CLASSES,
        pixel_mean=list(cfg.MODEL.PIXEL_MEAN),
        pixel_std=list(cfg.MODEL.PIXEL_STD),
        select_box_nums_for_evaluation=d.SELECT_BOX_NUMS_FOR_EVALUATION,
        input_format=cfg.INPUT.FORMAT,
        size_divisibility=0,
    )
