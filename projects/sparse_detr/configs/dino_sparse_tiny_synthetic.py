"""Tiny DINO + Sparse DETR encoder (keep ratio 0.3) on the built-in synthetic shapes dataset.

`projects/dino/configs/dino_tiny_synthetic.py` (tiny model, small images, 2000 iterations) with a
swappable encoder: the same config trains the three encoders at the same keep ratio and depth,
e.g.

    tools/train_net.py --config-file projects/sparse_detr/configs/dino_sparse_tiny_synthetic.py
    tools/train_net.py --config-file ... model.transformer.encoder.name=focus
    tools/train_net.py --config-file ... model.transformer.encoder.name=dense
    tools/train_net.py --config-file ... model.transformer.encoder.keep_ratio=0.1

The Focus choice is the tiny Focus-DETR's encoder (projects/focus_detr/configs/models/
focus_detr_tiny.py): cascade (1.0, 0.5), i.e. 0.4 / 0.2 of the valid tokens (mean 0.3), and 100
object tokens.
"""

from detectron2.config import LazyCall as L

from focus_detr.evaluation import with_token_selection
from focus_detr.modeling.encoders import swappable_encoder
from focus_detr.modeling.focus import ForegroundLabelAssigner

from ...dino.configs.dino_tiny_synthetic import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.transformer.encoder = swappable_encoder(
    model.transformer.encoder,
    name="sparse",
    keep_ratio=0.3,
    cascade_ratios=(1.0, 0.5),
    num_object_tokens=100,
)

train.output_dir = "./output/dino_sparse_tiny_synthetic"
# COCO AP and the kept tokens' precision/recall against the foreground labels, in one pass (a
# dense encoder keeps every token: its selection metrics are skipped with a warning)
# (labels of the Focus choice's assignment for all three, so their recalls compare)
dataloader.evaluator = with_token_selection(
    dataloader.evaluator,
    assigner=L(ForegroundLabelAssigner)(
        range_scale="${model.transformer.encoder.choices.focus.foreground_loss.assigner.range_scale}"
    ),
)
model.return_token_selection = True
