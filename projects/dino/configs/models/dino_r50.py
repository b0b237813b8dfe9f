"""DINO-R50, 4 scales (detrex's `dino_r50_4scale_12ep` model): FrozenBN ResNet-50 res3-res5,
channel mapper to 256 with a 4th stride-64 level, 6+6 layers, 900 queries, 100 denoising queries.

Swap the encoder with one override, e.g. `model.transformer.encoder = L(MyEncoder)(...)`: every
other module keeps its name and weights.

`model.transformer.padding` ("published" here, "masked") is the one key for how training treats a
padded batch's padded tokens, in the proposal cut and in the Focus encoder's selector and loss."""

import torch.nn as nn
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet

from focus_detr.layers import PositionEmbeddingSine
from focus_detr.modeling import (
    DINO,
    ChannelMapper,
    ContrastiveDenoising,
    DeformableDecoderLayer,
    DeformableEncoder,
    DeformableEncoderLayer,
    DINOCriterion,
    DINODecoder,
    DINOTransformer,
    HungarianMatcher,
)

model = L(DINO)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res3", "res4", "res5"],
        freeze_at=1,
    ),
    position_embedding=L(PositionEmbeddingSine)(
        num_pos_feats=128, temperature=10000, normalize=True, offset=-0.5
    ),
    neck=L(ChannelMapper)(
        input_shapes={
            "res3": ShapeSpec(channels=512, stride=8),
            "res4": ShapeSpec(channels=1024, stride=16),
            "res5": ShapeSpec(channels=2048, stride=32),
        },
        in_features=["res3", "res4", "res5"],
        out_channels=256,
        num_outs=4,
        kernel_size=1,
        norm=L(nn.GroupNorm)(num_groups=32, num_channels=256),
    ),
    transformer=L(DINOTransformer)(
        encoder=L(DeformableEncoder)(
            layer=L(DeformableEncoderLayer)(
                embed_dim=256,
                num_heads=8,
                num_levels=4,
                num_points=4,
                feedforward_dim=2048,
                attn_dropout=0.0,
                ffn_dropout=0.0,
            ),
            num_layers=6,
        ),
        decoder=L(DINODecoder)(
            layer=L(DeformableDecoderLayer)(
                embed_dim=256,
                num_heads=8,
                num_levels=4,
                num_points=4,
                feedforward_dim=2048,
                attn_dropout=0.0,
                ffn_dropout=0.0,
            ),
            num_layers=6,
            num_classes="${...num_classes}",
            look_forward_twice=True,
        ),
        num_feature_levels=4,
        num_queries=900,
        # training on padded batches as the published code trains (see DINOTransformer);
        # "masked" keeps padded tokens out of every selection and loss
        padding="published",
    ),
    criterion=L(DINOCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(
            cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2.0
        ),
        # auxiliary (_0.._4), encoder (_enc) and denoising (_dn*) terms take these base weights
        weight_dict={"loss_class": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        alpha=0.25,
        gamma=2.0,
    ),
    denoising=L(ContrastiveDenoising)(
        num_classes="${..num_classes}",
        num_dn_queries=100,
        label_noise_ratio=0.5,
        box_noise_scale=1.0,
    ),
    num_classes=80,
    pixel_mean=[123.675, 116.280, 103.530],
    pixel_std=[58.395, 57.120, 57.375],
    select_box_nums_for_evaluation=300,
    input_format="RGB",
)
