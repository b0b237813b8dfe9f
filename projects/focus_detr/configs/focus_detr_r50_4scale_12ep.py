"""Focus-DETR-R50, 4 scales, 12 epochs on COCO (published: 48.8 AP): 90k iterations at batch 16,
lr 1e-4 (backbone x0.1) decayed x0.1 at epoch 11, AdamW, weight decay 1e-4, grad clip 0.1."""
from focus_detr.engine import get_config

from .models.focus_detr_r50 import model

dataloader = get_config("common/data/coco_detr.py").dataloader
optimizer = get_config("common/optim.py").AdamW
lr_multiplier = get_config("common/schedules.py").lr_multiplier_12ep
train = get_config("common/train.py").train

# ImageNet ResNet-50 (torchvision weights in detectron2's format)
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.output_dir = "./output/focus_detr_r50_4scale_12ep"
train.max_iter = 90000
train.eval_period = 5000
train.log_period = 20
train.checkpointer.period = 5000
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.1
train.clip_grad.params.norm_type = 2
train.device = "cuda"

optimizer.lr = 1e-4
optimizer.betas = (0.9, 0.999)
optimizer.weight_decay = 1e-4

dataloader.train.total_batch_size = 16  # over all GPUs
dataloader.evaluator.output_dir = train.output_dir
