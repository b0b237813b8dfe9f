"""DINO-R101, 4 scales, 12 epochs.

detectron2's model zoo has no torchvision-style R-101 .pkl: point `train.init_checkpoint` at a
torchvision `resnet101` state dict (.pth, converted on load) or a detectron2-format R-101 with
the stride in the 3x3 convolution.
"""

from .dino_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.stages.depth = 101
train.init_checkpoint = ""
train.output_dir = "./output/dino_r101_4scale_12ep"
dataloader.evaluator.output_dir = "${train.output_dir}"  # follows command-line overrides
