"""The tiny DINO config learns: on the built-in dataset its training loss falls and its box AP on
the synthetic val split rises well above an untrained model's.

Runs the config's own model, optimizer, lr schedule (scaled to ITERS), gradient clipping, data
pipeline (short side 112-160 in training, 128 in evaluation) and evaluator on the whole val
split, for ITERS iterations so that it takes a few minutes on 2 CPU cores.

Thresholds, from measurements with these settings (`python tests/test_dino_learning.py SEED`,
seeds 0 / 1 / 2): box AP (COCO, percent) 0.001 / 0.000 / 0.003 untrained, 2.89 / 1.19 / 1.94
after ITERS iterations; loss ratio (mean of the last 50 iterations over the first 50)
0.715 / 0.757 / 0.717. MIN_AP = 0.5 lies 2.4x below the weakest trained run and over 100x above
the untrained ones;
MAX_LOSS_RATIO = 0.9 lies between the measured ratios and 1 (no learning).
"""

import contextlib
import io
import random
import sys
import time

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import HookBase

from focus_detr.engine import REPO_ROOT, launch

CONFIG = REPO_ROOT / "projects/dino/configs/dino_tiny_synthetic.py"
ITERS = 400
BATCH = 4
MIN_AP = 0.5
MAX_LOSS_RATIO = 0.9


def learning_cfg(iters=ITERS):
    cfg = LazyConfig.load(str(CONFIG))
    assert cfg.dataloader.train.mapper.augmentation[1].max_size == 240  # the small images
    cfg.dataloader.train.total_batch_size = BATCH
    cfg.dataloader.train.num_workers = 0
    cfg.dataloader.test.num_workers = 0
    cfg.dataloader.evaluator.output_dir = None
    cfg.train.max_iter = iters
    return cfg


def evaluate(cfg, model):
    with contextlib.redirect_stdout(io.StringIO()):
        result = launch.evaluate(cfg, model)
    model.train()
    return result["bbox"]["AP"]


class LossLog(HookBase):
    """Prints the mean loss of the last 50 iterations every 50 iterations."""

    def __init__(self, log):
        self.log = log

    def after_step(self):
        it = self.trainer.iter
        if self.log and it % 50 == 0:
            values = [v for v, _ in self.trainer.storage.history("total_loss").values()]
            self.log(f"iter {it} loss {np.mean(values[-50:]):.2f}")


def train(cfg, seed=0, log=None):
    """Returns (AP before training, AP after, per-iteration losses): the config's optimizer,
    LR schedule and gradient clipping, through the package's training entry point."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model = instantiate(cfg.model)
    ap_before = evaluate(cfg, model)
    run = launch.train(cfg, model=model, hooks=[LossLog(log)], save=False)
    losses = [v for v, _ in run.trainer.storage.history("total_loss").values()]
    return ap_before, evaluate(cfg, run.model), losses


@pytest.mark.slow
def test_tiny_dino_learns():  # on conftest.py's one thread (2 threads: > 900 s instead of ~210 s)
    ap_before, ap_after, losses = train(learning_cfg())
    ratio = np.mean(losses[-50:]) / np.mean(losses[:50])
    assert all(np.isfinite(losses))
    assert ratio < MAX_LOSS_RATIO, f"loss ratio {ratio:.3f}"
    assert ap_after > MIN_AP, f"AP {ap_after:.2f} (untrained {ap_before:.2f})"
    assert ap_after > 10 * max(ap_before, 0.01)


if __name__ == "__main__":  # measurement: python tests/test_dino_learning.py [seed ...]
    torch.set_num_threads(1)
    for seed in [int(s) for s in sys.argv[1:]] or [0]:
        start = time.time()
        before, after, losses = train(learning_cfg(), seed, log=print)
        print(
            f"seed {seed}: AP {before:.3f} -> {after:.3f}, loss ratio "
            f"{np.mean(losses[-50:]) / np.mean(losses[:50]):.3f}, {time.time() - start:.0f} s",
            flush=True,
        )
