"""Focus-DETR-R101, 4 scales, 36 epochs (published: 51.4 AP): the R50 36-epoch recipe with a
ResNet-101 backbone."""
from .focus_detr_r50_4scale_36ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.stages.depth = 101

train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-101.pkl"
train.output_dir = "./output/focus_detr_r101_4scale_36ep"
dataloader.evaluator.output_dir = train.output_dir
