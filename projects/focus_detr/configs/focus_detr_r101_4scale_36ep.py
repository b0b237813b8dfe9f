"""Focus-DETR-R101, 4 scales, 36 epochs (published: 51.4 AP): the R50 36-epoch recipe with a
ResNet-101 backbone.

detectron2's model zoo has no torchvision-style R-101 .pkl: point `train.init_checkpoint` at a
torchvision `resnet101` state dict (.pth, converted on load) or a detectron2-format R-101 with
the stride in the 3x3 convolution.
"""

from .focus_detr_r50_4scale_36ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.stages.depth = 101

train.init_checkpoint = ""
train.output_dir = "./output/focus_detr_r101_4scale_36ep"
