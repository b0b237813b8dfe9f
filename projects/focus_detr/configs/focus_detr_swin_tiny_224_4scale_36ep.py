"""Focus-DETR with a Swin-T backbone, 4 scales, 36 epochs on COCO: the R50 36-epoch recipe
(`focus_detr_r50_4scale_36ep.py`) with the published Swin-T (`models/focus_detr_swin_tiny_224.py`).

Weights (`train.init_checkpoint=...`, nothing is downloaded): the published Focus-DETR Swin-T
checkpoint loads by key; the original release's ImageNet Swin-T file
(`swin_tiny_patch4_window7_224.pth`) is converted on load into the backbone's initialization.
"""

from .focus_detr_r50_4scale_36ep import dataloader, lr_multiplier, model, optimizer, train
from .models.swin_backbones import SWIN_TINY_224, use_swin

use_swin(model, SWIN_TINY_224)

train.init_checkpoint = ""  # the R-50 ImageNet weights do not apply
train.output_dir = "./output/focus_detr_swin_tiny_224_4scale_36ep"
