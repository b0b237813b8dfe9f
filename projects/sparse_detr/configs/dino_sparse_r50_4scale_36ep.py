"""DINO-R50 (4 scales) + Sparse DETR encoder, keep ratio rho = 0.3, 36 epochs on COCO: the paper's
"DINO + Sparse DETR" baseline (Table 1: 48.2 AP, 152 GFLOPs; Table 6 sweeps rho 0.1 .. 0.5).

Published DINO/Focus-DETR training recipe (see ../../../shared facts): AdamW lr 1e-4 (backbone
x0.1), weight decay 1e-4, grad clip 0.1, batch 16, 270k iterations with the lr decay at epoch 20;
from 24 epochs on the sine position embedding uses temperature 20 and offset 0.

Swap the encoder with one override (same weights names outside `transformer.encoder`):
    model.transformer.encoder.name=dense | sparse | focus
    model.transformer.encoder.keep_ratio=0.1 .. 0.5
"""
from focus_detr.engine import get_config
from focus_detr.modeling.encoders import swappable_encoder

from ...dino.configs.models.dino_r50 import model

dataloader = get_config("common/data/coco_detr.py").dataloader
optimizer = get_config("common/optim.py").AdamW
lr_multiplier = get_config("common/schedules.py").lr_multiplier_36ep
train = get_config("common/train.py").train

model.transformer.encoder = swappable_encoder(model.transformer.encoder, name="sparse",
                                              keep_ratio=0.3)
model.position_embedding.temperature = 20
model.position_embedding.offset = 0.0

train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.output_dir = "./output/dino_sparse_r50_4scale_36ep"
train.max_iter = 270000
train.eval_period = 5000
train.log_period = 20
train.checkpointer.period = 5000
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.1
train.clip_grad.params.norm_type = 2
train.device = "cuda"

dataloader.train.total_batch_size = 16
dataloader.train.num_workers = 16
dataloader.evaluator.output_dir = train.output_dir
