"""Learning-rate multipliers (`lr_multiplier` of a config), step decay by 0.1.

An "epoch" of COCO at batch 16 is 7500 iterations (detrex's convention: 12 epochs = 90k).
Published Focus-DETR / DINO schedules: 12ep = 90k iterations, decay at epoch 11; 24ep = 180k,
decay at epoch 20; 36ep = 270k, decay at epoch 20 (not 30).

Schedules for other datasets and batch sizes: `focus_detr.engine.schedules.epoch_schedule`
(scale-invariant: milestones are fractions of the schedule, applied to `train.max_iter`).
"""

from focus_detr.engine.schedules import coco_schedule

lr_multiplier_12ep = coco_schedule(12, 11)  # 90k iterations, decay at 82.5k
lr_multiplier_24ep = coco_schedule(24, 20)  # 180k, decay at 150k
lr_multiplier_36ep = coco_schedule(36, 20)  # 270k, decay at 150k (the published Focus-DETR 36ep)
