"""Focus-DETR with a Swin-T backbone, detrex's `focus_detr_swin_tiny_224` model: the R50 model with
the Swin Transformer the published Swin models use (`focus_detr.modeling.backbone.SwinTransformer`,
detectron2's layout and names: embed dim 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7,
drop path 0.1), its stages 1-3 (strides 8/16/32, 192/384/768 channels, each through its output
LayerNorm) into the channel mapper, so the published Swin-T checkpoints load by key."""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from focus_detr.modeling.backbone import SwinTransformer

from .focus_detr_r50 import model

SWIN_TINY = L(SwinTransformer)(
    pretrain_img_size=224,
    embed_dim=96,
    depths=(2, 2, 6, 2),
    num_heads=(3, 6, 12, 24),
    drop_path_rate=0.1,
    window_size=7,
    out_indices=(1, 2, 3),
)
SWIN_TINY_OUTPUTS = {
    "p1": ShapeSpec(channels=192, stride=8),
    "p2": ShapeSpec(channels=384, stride=16),
    "p3": ShapeSpec(channels=768, stride=32),
}

model.backbone = SWIN_TINY
model.neck.input_shapes = SWIN_TINY_OUTPUTS
model.neck.in_features = list(SWIN_TINY_OUTPUTS)
