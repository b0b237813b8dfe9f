"""DINO-R50, 4 scales, 24 epochs (decay at epoch 20): DAB-DETR's position embedding
(temperature 20, offset 0) and images without objects kept in training, as detrex's 24ep."""

from focus_detr.engine import get_config

from .dino_r50_4scale_12ep import dataloader, model, optimizer, train

lr_multiplier = get_config("common/schedules.py").lr_multiplier_24ep

model.position_embedding.temperature = 20
model.position_embedding.offset = 0.0

train.output_dir = "./output/dino_r50_4scale_24ep"
train.max_iter = 180000
dataloader.train.dataset.filter_empty = False
dataloader.evaluator.output_dir = "${train.output_dir}"  # follows command-line overrides
