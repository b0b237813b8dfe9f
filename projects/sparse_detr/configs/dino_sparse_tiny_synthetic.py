"""Tiny DINO + Sparse DETR encoder (keep ratio 0.3) on the built-in synthetic shapes dataset.

The tiny DINO model (`projects/dino/configs/models/dino_tiny.py`) and the training settings of
`projects/dino/configs/dino_tiny_synthetic.py`, with a swappable encoder: the same config trains
the three encoders at the same keep ratio and depth, e.g.

    tools/train_net.py --config-file projects/sparse_detr/configs/dino_sparse_tiny_synthetic.py
    tools/train_net.py --config-file ... model.transformer.encoder.name=focus
    tools/train_net.py --config-file ... model.transformer.encoder.name=dense
    tools/train_net.py --config-file ... model.transformer.encoder.keep_ratio=0.1

With 2 encoder layers the Focus cascade is (1.0, 0.5): 0.4 / 0.2 of the valid tokens, mean 0.3.
"""
from focus_detr.engine import get_config
from focus_detr.engine.schedules import multistep_schedule
from focus_detr.modeling.encoders import swappable_encoder

from ...dino.configs.models.dino_tiny import model

dataloader = get_config("common/data/synthetic.py").dataloader
optimizer = get_config("common/optim.py").AdamW
train = get_config("common/train.py").train

model.num_classes = 6  # the synthetic shapes' categories
model.transformer.encoder = swappable_encoder(
    model.transformer.encoder, name="sparse", keep_ratio=0.3, cascade_ratios=(1.0, 0.5))

# from scratch: the backbone learns at the full rate; a larger lr than DINO's 1e-4 for speed
optimizer.lr = 4e-4
optimizer.params.lr_factor_func.factor = 1.0

dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1

train.max_iter = 2000
lr_multiplier = multistep_schedule(train.max_iter, int(train.max_iter * 0.9), warmup_iters=50)
train.device = "cpu"
train.eval_period = 500
train.checkpointer.period = 500
train.log_period = 20
train.output_dir = "./output/dino_sparse_tiny_synthetic"
train.seed = 42
dataloader.evaluator.output_dir = train.output_dir
