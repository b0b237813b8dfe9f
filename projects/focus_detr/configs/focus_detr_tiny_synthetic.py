"""Tiny Focus-DETR on the built-in synthetic shapes dataset: trains and evaluates in about ten
minutes on 2 CPU cores (the README's main job).

    tools/train_net.py --config-file projects/focus_detr/configs/focus_detr_tiny_synthetic.py

Data, optimizer and schedule are the tiny DINO's (`projects/dino/configs/dino_tiny_synthetic.py`:
small images, no crop augmentation, 2000 iterations), so the two compare at equal budget. The
label-assignment ranges are the published ones scaled to the small images
(`LABEL_RANGE_SCALE`), so that every feature level gets foreground. The logit form of the
top-down modulation (coarse scores reach the finer ones, README): add
`model.transformer.encoder.selector.modulation_target=logits`.
"""

from detectron2.config import LazyCall as L

from focus_detr.evaluation import with_token_selection
from focus_detr.modeling.focus import ForegroundLabelAssigner

from ...dino.configs.dino_tiny_synthetic import (
    LABEL_RANGE_SCALE,
    dataloader,
    lr_multiplier,
    optimizer,
    train,
)
from .models.focus_detr_tiny import model

model.num_classes = 6  # the synthetic shapes' categories
train.output_dir = "./output/focus_detr_tiny_synthetic"
# label-assignment ranges scaled to the small images (see LABEL_RANGE_SCALE)
model.transformer.encoder.foreground_loss.assigner.range_scale = LABEL_RANGE_SCALE

# COCO AP plus precision/recall of the kept tokens against the model's own foreground labels
dataloader.evaluator = with_token_selection(
    dataloader.evaluator,
    assigner=L(ForegroundLabelAssigner)(
        range_scale="${model.transformer.encoder.foreground_loss.assigner.range_scale}"
    ),
)
model.return_token_selection = True
