"""Focus-DETR with a Swin-T backbone, 4 scales, 36 epochs on COCO: the R50 36-epoch recipe
(`focus_detr_r50_4scale_36ep.py`) with timm's Swin-T (`models/focus_detr_swin_tiny_224.py`).

ImageNet weights: timm downloads nothing here; give a checkpoint whose keys follow this model
(`backbone.body.*`, timm's feature-extractor names) with `train.init_checkpoint=...`.
"""
from .focus_detr_r50_4scale_36ep import dataloader, lr_multiplier, model, optimizer, train
from .models.focus_detr_swin_tiny_224 import SWIN_TINY, SWIN_TINY_OUTPUTS

model.backbone = SWIN_TINY
model.neck.input_shapes = SWIN_TINY_OUTPUTS
model.neck.in_features = list(SWIN_TINY_OUTPUTS)

train.init_checkpoint = ""  # the R-50 ImageNet weights do not apply
train.output_dir = "./output/focus_detr_swin_tiny_224_4scale_36ep"
