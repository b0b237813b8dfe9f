"""Tiny Focus-DETR on the built-in synthetic shapes dataset: trains and evaluates in about ten
minutes on 2 CPU cores (the README's main job).

    tools/train_net.py --config-file projects/focus_detr/configs/focus_detr_tiny_synthetic.py

Data, optimizer and schedule are the tiny DINO's (`projects/dino/configs/dino_tiny_synthetic.py`:
small images, no crop augmentation, 2000 iterations), so the two compare at equal budget. The
logit form of the top-down modulation (coarse scores reach the finer ones, README): add
`model.transformer.encoder.selector.modulation_target=logits`.
"""
from focus_detr.evaluation import with_token_selection

from ...dino.configs.dino_tiny_synthetic import dataloader, lr_multiplier, optimizer, train
from .models.focus_detr_tiny import model

model.num_classes = 6  # the synthetic shapes' categories
train.output_dir = "./output/focus_detr_tiny_synthetic"

# COCO AP plus precision/recall of the kept tokens against the foreground labels
dataloader.evaluator = with_token_selection(dataloader.evaluator)
model.return_token_selection = True
