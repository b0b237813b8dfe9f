"""Optimizers. `optimizer.params.model` is set to the model by tools/train_net.py.

AdamW as in DETR/DINO/Focus-DETR: lr 1e-4, weight decay 1e-4, no decay on normalization layers,
parameters whose name contains "backbone" at 0.1x the lr.
"""

import torch
from detectron2.config import LazyCall as L

from focus_detr.engine.optim import get_default_optimizer_params, keyword_lr_factor

AdamW = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(
        base_lr="${..lr}",
        weight_decay_norm=0.0,
        lr_factor_func=L(keyword_lr_factor)(keyword="backbone", factor=0.1),
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=1e-4,
)

SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
)
