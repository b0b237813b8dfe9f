"""Checkpointing that never loses the last good checkpoint and loads without unpickling code."""

import logging
import os

import torch
from detectron2.engine import hooks

from ..modeling.checkpoint import DetrCheckpointer

__all__ = [
    "SafeDetectionCheckpointer",
    "LRSchedulerHook",
    "check_finite_weights",
    "safe_load_checkpoint",
]

logger = logging.getLogger(__name__)


def _trusted_classes():
    """Non-tensor classes found in detectron2/detrex training checkpoints (scheduler state)."""
    from fvcore.common import param_scheduler as ps

    classes = [
        getattr(ps, n)
        for n in dir(ps)
        if isinstance(getattr(ps, n), type) and issubclass(getattr(ps, n), ps.ParamScheduler)
    ]
    from detectron2.solver import lr_scheduler as d2_lr

    classes += [
        getattr(d2_lr, n) for n in ("WarmupParamScheduler", "LRMultiplier") if hasattr(d2_lr, n)
    ]
    return classes


def check_finite_weights(state, what):
    """Raise `FloatingPointError` naming the first floating-point tensor of `state` (a state
    dict) holding NaN or inf."""
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                raise FloatingPointError(
                    f"{what}: {key!r} holds non-finite values; not saved (the previous "
                    "checkpoint stays the last one). Training diverged: resume from the last "
                    "checkpoint with a lower learning rate"
                )


def safe_load_checkpoint(path):
    """`torch.load(path, weights_only=True)` (plus detectron2's scheduler classes) on CPU.

    Raises:
        FileNotFoundError: `path` does not exist.
        RuntimeError: the file is truncated, corrupt, or holds objects other than tensors and
            plain containers; the message names the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        with torch.serialization.safe_globals(_trusted_classes()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError / UnpicklingError / EOFError / ...
        raise RuntimeError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}") from e


class SafeDetectionCheckpointer(DetrCheckpointer):
    """`DetrCheckpointer` (detrex key aliases, torchvision ResNet backbones) with atomic saves and
    `weights_only` loading of .pth files that may also hold detectron2 scheduler state.

    A checkpoint is written to a temporary file and renamed into place, then `last_checkpoint`
    is replaced the same way, so a crash while saving (or any later failure, e.g. in evaluation)
    leaves the previous checkpoint and its tag intact. Weights (model or EMA) that are not
    finite are never written: `save` raises `FloatingPointError` naming the first such tensor,
    and the previous checkpoint stays the last one.
    """

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        check_finite_weights(data["model"], f"model weights for checkpoint {name!r}")
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        if isinstance(data.get("ema"), dict) and isinstance(data["ema"].get("state"), dict):
            check_finite_weights(data["ema"]["state"], f"EMA weights for checkpoint {name!r}")
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        tmp = save_file + ".tmp"
        self.logger.info(f"Saving checkpoint to {save_file}")
        try:
            torch.save(data, tmp)
            os.replace(tmp, save_file)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        tag = os.path.join(self.save_dir, "last_checkpoint")
        with open(tag + ".tmp", "w") as f:
            f.write(last_filename_basename)
        os.replace(tag + ".tmp", tag)

    def load(self, path, checkpointables=None):
        if path and not os.path.isfile(path) and "://" not in path:
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        return super().load(path, checkpointables=checkpointables)

    def _load_file(self, filename):
        if filename.endswith((".pth", ".pt")):
            loaded = safe_load_checkpoint(filename)
            return loaded if "model" in loaded else {"model": loaded}
        return super()._load_file(filename)  # .pkl (Detectron/Caffe2 model zoo) and .pyth


class LRSchedulerHook(hooks.LRScheduler):
    """detectron2's LR scheduler hook, saving only plain values (no scheduler objects).

    torch's `LRScheduler.state_dict` includes every attribute, here the fvcore multiplier object,
    which `weights_only` loading refuses; the schedule itself comes from the config on resume.
    """

    def state_dict(self):
        state = super().state_dict()
        return {k: v for k, v in state.items() if isinstance(v, (int, float, list, tuple, bool))}
