"""LazyConfig of the test-only ToyDetector on the built-in synthetic dataset (CPU, seconds)."""

from detectron2.config import LazyCall as L

from focus_detr.engine import get_config
from focus_detr.engine.schedules import multistep_schedule
from tests.toy_model import ToyDetector

model = L(ToyDetector)(num_classes=6, channels=16)

dataloader = get_config("common/data/synthetic.py").dataloader
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0

optimizer = get_config("common/optim.py").AdamW
optimizer.lr = 1e-3

train = get_config("common/train.py").train
train.max_iter = 6
train.eval_period = 0
train.log_period = 2
train.checkpointer.period = 3
train.device = "cpu"
train.seed = 1
train.output_dir = "./output/toy"

lr_multiplier = multistep_schedule(train.max_iter, 4)
