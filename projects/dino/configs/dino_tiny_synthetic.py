"""Tiny DINO on the built-in synthetic shapes dataset: learns in minutes on 2 CPU cores.

`make train` runs it; e.g. `tools/train_net.py --config-file projects/dino/configs/dino_tiny_synthetic.py`.
"""
from focus_detr.engine import get_config
from focus_detr.engine.schedules import multistep_schedule

from .models.dino_tiny import model

dataloader = get_config("common/data/synthetic.py").dataloader
optimizer = get_config("common/optim.py").AdamW
train = get_config("common/train.py").train

model.num_classes = 6  # the synthetic shapes' categories

# from scratch: the backbone learns at the full rate; a larger lr than DINO's 1e-4 for speed
optimizer.lr = 4e-4
optimizer.params.lr_factor_func.factor = 1.0

dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1

train.max_iter = 2000
lr_multiplier = multistep_schedule(train.max_iter, int(train.max_iter * 0.9),
                                             warmup_iters=50)
train.device = "cpu"
train.eval_period = 500
train.checkpointer.period = 500
train.log_period = 20
train.output_dir = "./output/dino_tiny_synthetic"
train.seed = 42
dataloader.evaluator.output_dir = train.output_dir
