"""A tiny DINO for CPU training from scratch: ResNet-18 layout at half width with trainable
BatchNorm (no ImageNet weights offline), embed dim 64, 2 encoder and 3 decoder layers, 100
queries, 30 denoising queries. Same classes as DINO-R50; only sizes change."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from focus_detr.modeling.backbone import make_resnet_stages

from .dino_r50 import model

WIDTH = 32  # stem channels; res3/res4/res5 have 2x/4x/8x
EMBED_DIM = 64

model.backbone.stem.out_channels = WIDTH
model.backbone.stem.norm = "BN"
model.backbone.stages = L(make_resnet_stages)(depth=18, width=WIDTH, norm="BN")
model.backbone.freeze_at = 0
model.position_embedding.num_pos_feats = EMBED_DIM // 2
model.neck.input_shapes = {
    "res3": ShapeSpec(channels=2 * WIDTH, stride=8),
    "res4": ShapeSpec(channels=4 * WIDTH, stride=16),
    "res5": ShapeSpec(channels=8 * WIDTH, stride=32),
}
model.neck.out_channels = EMBED_DIM
model.neck.norm.num_channels = EMBED_DIM
for part, layers in (("encoder", 2), ("decoder", 3)):
    sub = model.transformer[part]
    sub.num_layers = layers
    sub.layer.embed_dim = EMBED_DIM
    sub.layer.num_heads = 4
    sub.layer.feedforward_dim = 4 * EMBED_DIM
model.transformer.num_queries = 100
model.denoising.num_dn_queries = 30
model.select_box_nums_for_evaluation = 100
# our own recipe, not the published one: each image of a padded batch trains as if alone
model.transformer.padding = "masked"
