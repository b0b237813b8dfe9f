"""DINO-R50, 4 scales, 12 epochs on COCO (detrex's dino_r50_4scale_12ep: 49.2 AP published).

ImageNet initialization: detectron2's converted torchvision R-50 (model zoo .pkl); a torchvision
`resnet50` state dict (.pth) also works with `train.init_checkpoint=/path/resnet50.pth` (its keys
are converted by `focus_detr.engine.published_checkpoints.DetrCheckpointer`).
"""

from focus_detr.engine import get_config

from .models.dino_r50 import model

dataloader = get_config("common/data/coco_detr.py").dataloader
optimizer = get_config("common/optim.py").AdamW
lr_multiplier = get_config("common/schedules.py").lr_multiplier_12ep
train = get_config("common/train.py").train

train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.output_dir = "./output/dino_r50_4scale_12ep"
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

dataloader.train.num_workers = 16
dataloader.train.total_batch_size = 16  # total over all GPUs
dataloader.evaluator.output_dir = "${train.output_dir}"  # follows command-line overrides
