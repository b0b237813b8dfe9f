"""Exponential moving average (EMA) of a model's weights."""

import contextlib
import logging

import torch
from detectron2.engine import HookBase
from torch import nn

__all__ = ["ModelEMA", "EMAHook", "unwrap_model"]

logger = logging.getLogger(__name__)


def unwrap_model(model):
    """The module inside a DistributedDataParallel / DataParallel wrapper (or `model`)."""
    return (
        model.module
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel))
        else model
    )


class ModelEMA:
    """EMA of every floating-point entry of a model's state dict; other entries are copied.

    ``ema = d * ema + (1 - d) * weight`` after every optimizer step, with
    ``d = min(decay, (1 + n) / (10 + n))`` after n updates when `warmup` (so that early, short
    runs are not dominated by the random initialisation).

    Checkpointable: `state_dict()` / `load_state_dict()` hold the averaged tensors and the
    update count, so an interrupted run resumes with the same EMA.

    Args:
        model: the model (a DDP wrapper is unwrapped).
        decay: the EMA decay.
        device: device of the EMA copy; "" for the model's device.
        warmup: use the warm-up decay above.
    """

    def __init__(self, model, decay=0.999, device="", warmup=True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.device = torch.device(device) if device else None
        self.num_updates = 0
        self.state = {
            k: self._to(v.detach().clone()) for k, v in unwrap_model(model).state_dict().items()
        }

    @torch.no_grad()
    def reset(self, model):
        """Restart the average at the model's current weights."""
        for k, v in unwrap_model(model).state_dict().items():
            self.state[k].copy_(v.detach())
        self.num_updates = 0

    def _to(self, t):
        return t.to(self.device) if self.device is not None else t

    def current_decay(self):
        if self.warmup:
            return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        return self.decay

    @torch.no_grad()
    def update(self, model):
        """Fold the model's current weights into the average."""
        d = self.current_decay()
        for k, v in unwrap_model(model).state_dict().items():
            ema = self.state[k]
            v = v.detach().to(ema.device)
            if ema.dtype.is_floating_point:
                ema.lerp_(v.to(ema.dtype), 1.0 - d)
            else:
                ema.copy_(v)
        self.num_updates += 1

    def state_dict(self):
        return {"state": self.state, "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state_dict):
        missing = set(self.state) - set(state_dict["state"])
        if missing:
            raise KeyError(
                f"EMA state is missing {len(missing)} entries, e.g. {sorted(missing)[:3]}"
            )
        for k, v in state_dict["state"].items():
            if k in self.state:
                self.state[k].copy_(v)
        self.num_updates = int(state_dict["num_updates"])

    @contextlib.contextmanager
    def apply_to(self, model):
        """Temporarily load the EMA weights into `model` (restored on exit, even on error)."""
        model = unwrap_model(model)
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict({k: v.to(backup[k].device) for k, v in self.state.items()})
        try:
            yield model
        finally:
            model.load_state_dict(backup)


class EMAHook(HookBase):
    """Updates a `ModelEMA` after every training step."""

    def __init__(self, ema, model):
        self.ema = ema
        self.model = model

    def after_step(self):
        self.ema.update(self.model)
