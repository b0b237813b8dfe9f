"""What an exact resume needs beyond weights, optimizer and schedule: every process's RNG states
and data-stream position, saved in the checkpoint as "stream".

With a loader that has `state_dict`/`load_state_dict` (`focus_detr.data.ResumableTrainLoader`)
a killed-and-resumed training trains on the same batches, with the same random draws, as an
uninterrupted one. Evaluation during training runs inside `preserved_rng()`, so evaluating (or
not, after a resume) does not shift the training's random draws.
"""

import contextlib
import logging
import random

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["StreamState", "StreamStateHook", "get_rng_state", "preserved_rng", "set_rng_state"]

logger = logging.getLogger(__name__)


def get_rng_state():
    """torch (CPU and, once initialized, CUDA), numpy and Python global RNG states, as tensors
    and plain values (loadable with `torch.load(weights_only=True)`)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng():
    """Run the block without changing the global RNG states seen after it."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class StreamState:
    """Checkpointable of every process's RNG states and `loader` position.

    Only rank 0 saves checkpoints, so with several processes `StreamStateHook` gathers the
    states on all of them right before each checkpoint; each process then loads its own entry.
    A checkpoint saved with another number of processes resumes, not exactly (a warning says so).
    """

    def __init__(self, loader):
        self.loader = loader
        self._gathered = None

    def _local(self):
        has_state = hasattr(self.loader, "state_dict")
        return {"loader": self.loader.state_dict() if has_state else None, "rng": get_rng_state()}

    def gather(self):
        """Collect every process's state (call on all processes at once)."""
        self._gathered = comm.all_gather(self._local())

    def state_dict(self):
        if comm.get_world_size() == 1:
            return {"ranks": [self._local()]}
        return {"ranks": self._gathered or []}

    def load_state_dict(self, state):
        ranks = state.get("ranks") or []
        world, rank = comm.get_world_size(), comm.get_rank()
        if len(ranks) != world:
            logger.warning(
                f"The checkpoint's data and RNG states are of {len(ranks)} "
                f"process(es), this run has {world}: they are not restored (the "
                "resume is not exact)"
            )
            return
        mine = ranks[rank]
        if mine.get("loader") is not None and hasattr(self.loader, "load_state_dict"):
            self.loader.load_state_dict(mine["loader"])
        elif not hasattr(self.loader, "load_state_dict"):
            logger.warning(
                f"{type(self.loader).__name__} cannot resume its position: the data "
                "restarts from its beginning (use "
                "focus_detr.data.build_resumable_train_loader for an exact resume)"
            )
        set_rng_state(mine["rng"])


class StreamStateHook(HookBase):
    """With several processes, gathers `StreamState` on all of them at the iterations that
    `PeriodicCheckpointer(period)` saves; register it before that hook."""

    def __init__(self, stream_state, period, max_iter):
        self.stream_state, self.period, self.max_iter = stream_state, int(period), int(max_iter)

    def after_step(self):
        if comm.get_world_size() == 1:
            return
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it >= self.max_iter - 1:
            self.stream_state.gather()
