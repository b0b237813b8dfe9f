"""DINO-R50, 4 scales, 36 epochs (decay at epoch 20, the schedule Focus-DETR compares with)."""

from focus_detr.engine import get_config

from .dino_r50_4scale_24ep import dataloader, model, optimizer, train

lr_multiplier = get_config("common/schedules.py").lr_multiplier_36ep

train.output_dir = "./output/dino_r50_4scale_36ep"
train.max_iter = 270000
dataloader.evaluator.output_dir = "${train.output_dir}"  # follows command-line overrides
