"""Focus-DETR-R50, 4 scales, 12 epochs on COCO (published: 48.8 AP).

DINO-R50's training (`projects/dino/configs/dino_r50_4scale_12ep.py`: 90k iterations at batch 16,
lr 1e-4 (backbone x0.1) decayed x0.1 at epoch 11, AdamW, weight decay 1e-4, grad clip 0.1, ImageNet
R-50 initialization) with the Focus-DETR model.
"""

from focus_detr.evaluation import with_token_selection

from ...dino.configs.dino_r50_4scale_12ep import dataloader, lr_multiplier, optimizer, train
from .models.focus_detr_r50 import model

train.output_dir = "./output/focus_detr_r50_4scale_12ep"

# COCO AP plus precision/recall of the kept tokens against the foreground labels
dataloader.evaluator = with_token_selection(dataloader.evaluator)
model.return_token_selection = True
