"""Focus-DETR-R50, 4 scales, 36 epochs (published: 50.4 AP, the paper's main result): 270k
iterations, decay at epoch 20 (the published schedule), position temperature 20, offset 0."""

from focus_detr.engine import get_config

from .focus_detr_r50_4scale_24ep import dataloader, model, optimizer, train

lr_multiplier = get_config("common/schedules.py").lr_multiplier_36ep

train.max_iter = 270000
train.output_dir = "./output/focus_detr_r50_4scale_36ep"
