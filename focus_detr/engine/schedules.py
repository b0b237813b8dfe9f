"""Step learning-rate schedules (LazyCall trees for a config's `lr_multiplier`).

The schedulers are scale-invariant: milestones are fractions of the schedule's length, applied to
`train.max_iter` of the run, so set `train.max_iter` to the same number of iterations.
"""

import math

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

__all__ = [
    "COCO_ITERS_PER_EPOCH",
    "multistep_schedule",
    "iters_for_epochs",
    "epoch_schedule",
    "coco_schedule",
]

COCO_ITERS_PER_EPOCH = 7500  # at total batch size 16


def multistep_schedule(max_iter, decay_iters, warmup_iters=0, gamma=0.1):
    """An lr multiplier: 1 (after a linear warm-up), times `gamma` after each of `decay_iters`.

    Args:
        max_iter: the schedule's length in iterations (= train.max_iter).
        decay_iters: iteration(s) at which the lr is multiplied by `gamma`.
        warmup_iters: linear warm-up from 0.001x over this many iterations.
        gamma: decay factor.
    """
    if isinstance(decay_iters, int):
        decay_iters = [decay_iters]
    decay_iters = sorted(int(d) for d in decay_iters)
    if any(not 0 < d < max_iter for d in decay_iters):
        raise ValueError(f"decay iterations {decay_iters} must lie in (0, max_iter={max_iter})")
    values = [gamma**i for i in range(len(decay_iters) + 1)]
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=values, milestones=decay_iters + [int(max_iter)]
        ),
        warmup_length=warmup_iters / max_iter,
        warmup_method="linear",
        warmup_factor=0.001,
    )


def iters_for_epochs(num_images, total_batch_size, epochs):
    """Iterations for `epochs` passes over `num_images` at `total_batch_size` (rounded up)."""
    return int(math.ceil(num_images * epochs / total_batch_size))


def epoch_schedule(num_images, total_batch_size, epochs, decay_epochs, warmup_iters=0):
    """(lr_multiplier, max_iter) of an epoch-based step schedule for any dataset and batch size.

    Example: ``lr_multiplier, train.max_iter = epoch_schedule(1600, 8, 12, 11)``.
    """
    max_iter = iters_for_epochs(num_images, total_batch_size, epochs)
    decay = iters_for_epochs(num_images, total_batch_size, decay_epochs)
    return multistep_schedule(max_iter, decay, warmup_iters), max_iter


def coco_schedule(epochs, decay_epochs, warmup_iters=0):
    """COCO at batch 16: (epochs * 7500) iterations, decay after `decay_epochs` epochs."""
    return multistep_schedule(
        epochs * COCO_ITERS_PER_EPOCH, decay_epochs * COCO_ITERS_PER_EPOCH, warmup_iters
    )
