"""Focus-DETR with Swin-T (detrex's `focus_detr_swin_tiny_224` model): the R50 model with the
Swin Transformer the published Swin models use (`focus_detr.modeling.backbone.SwinTransformer`,
detectron2's layout and names; embed dim 96, depths (2, 2, 6, 2), window 7, drop path 0.1), so
the published checkpoints load by key."""

from .focus_detr_r50 import model
from .swin_backbones import SWIN_TINY_224, use_swin

use_swin(model, SWIN_TINY_224)
