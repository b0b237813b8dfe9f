"""Focus-DETR-R50, 4 scales, 24 epochs (published: 50.3 AP): 180k iterations, decay at epoch 20;
from 24 epochs on the sine position embedding uses temperature 20 and offset 0."""

from focus_detr.engine import get_config

from .focus_detr_r50_4scale_12ep import dataloader, model, optimizer, train

lr_multiplier = get_config("common/schedules.py").lr_multiplier_24ep

model.position_embedding.temperature = 20
model.position_embedding.offset = 0.0

train.max_iter = 180000
train.output_dir = "./output/focus_detr_r50_4scale_24ep"
