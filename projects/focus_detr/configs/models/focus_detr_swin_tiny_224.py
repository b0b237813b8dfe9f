"""Focus-DETR with a Swin-T backbone, detrex's `focus_detr_swin_tiny_224` settings: the R50 model
with timm's `swin_tiny_patch4_window7_224` (embed dim 96, depths (2, 2, 6, 2), heads (3, 6, 12,
24), window 7, drop path 0.1), its stages 1-3 (strides 8/16/32, 192/384/768 channels) into the
channel mapper. Needs timm (`pip install -e .[swin]`); nothing is downloaded.

Not the published network layer for layer: detrex uses detectron2's SwinTransformer, which puts
a LayerNorm on each output stage and pads to whole windows inside every block, while timm's Swin
has no output norms and is padded once at the input (`TimmBackbone`). The published Swin
checkpoints therefore do not load here; train this config, or load its own checkpoints."""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from focus_detr.modeling.backbone import TimmBackbone

from .focus_detr_r50 import model

SWIN_TINY = L(TimmBackbone)(
    model_name="swin_tiny_patch4_window7_224",
    out_indices=(1, 2, 3),
    out_features=("p1", "p2", "p3"),
    drop_path_rate=0.1,
)
SWIN_TINY_OUTPUTS = {
    "p1": ShapeSpec(channels=192, stride=8),
    "p2": ShapeSpec(channels=384, stride=16),
    "p3": ShapeSpec(channels=768, stride=32),
}

model.backbone = SWIN_TINY
model.neck.input_shapes = SWIN_TINY_OUTPUTS
model.neck.in_features = list(SWIN_TINY_OUTPUTS)
