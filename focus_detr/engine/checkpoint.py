"""Checkpointing that never loses the last good checkpoint and loads without unpickling code."""

import logging
import os

import torch
from detectron2.engine import hooks
from detectron2.solver import lr_scheduler as d2_lr

from .published_checkpoints import CheckpointMismatchError, DetrCheckpointer
from .files import write_atomically, write_text_atomically

__all__ = [
    "SafeDetectionCheckpointer",
    "LRSchedulerHook",
    "check_finite_weights",
    "model_identity",
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


def model_identity(model, config_file=""):
    """What a checkpoint records of the model it holds: its class (import path) and the config
    file it was built from (absolute path; "" when unknown)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    cls = type(model)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "config_file": os.path.abspath(config_file) if config_file else "",
    }


def _state_differences(saved, own, shown=3):
    """'' or a description of the keys and shapes by which two model state dicts differ."""
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(saved[k].shape)}, model {tuple(own[k].shape)}"
        for k in own
        if k in saved and torch.is_tensor(saved[k]) and tuple(saved[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f", ... {len(items) - shown} more" if len(items) > shown else ""
            label = "shape mismatches" if what == "shape" else f"{what} keys"
            parts.append(f"{len(items)} {label} ({'; '.join(items[:shown])}{more})")
    return "; ".join(parts)


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

    def __init__(self, model, save_dir="", *, model_info=None, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        # recorded in every checkpoint, so that --resume can tell another model's checkpoint
        self.model_info = dict(model_info) if model_info else None

    def check_resume_fits(self, path=None):
        """Raise `CheckpointMismatchError` before anything is loaded when the checkpoint to
        resume from (default: the last one in `save_dir`) holds another model: another model
        class recorded in it, or model weights with other keys or shapes.

        The message names the checkpoint's model and config and the current ones."""
        path = path or self.get_checkpoint_file()
        checkpoint = safe_load_checkpoint(path)
        saved_info = checkpoint.get("model_info") or {}
        own_info = self.model_info or {}
        other_class = (
            saved_info.get("class")
            and own_info.get("class")
            and saved_info["class"] != own_info["class"]
        )
        differences = _state_differences(checkpoint.get("model", {}), self.model.state_dict())
        if not other_class and not differences:
            return

        def describe(info):
            if not info.get("class"):
                return "a model of unknown class (not recorded in the checkpoint)"
            config = info.get("config_file") or "unknown"
            return f"{info['class']} (config {config})"

        raise CheckpointMismatchError(
            f"--resume: the last checkpoint {path} is of another model than this run: the "
            f"checkpoint holds {describe(saved_info)}, this run builds {describe(own_info)}"
            f"{'; weights differ: ' + differences if differences else ''}. Nothing was loaded. "
            f"Resume with that run's config (saved in {self.save_dir}), or train this model "
            "into another train.output_dir"
        )

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        check_finite_weights(data["model"], f"model weights for checkpoint {name!r}")
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        if isinstance(data.get("ema"), dict) and isinstance(data["ema"].get("state"), dict):
            check_finite_weights(data["ema"]["state"], f"EMA weights for checkpoint {name!r}")
        if self.model_info:
            data["model_info"] = dict(self.model_info)
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        write_atomically(save_file, lambda tmp: torch.save(data, tmp))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        write_text_atomically(
            os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename
        )

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
