"""Training and evaluation machinery used by tools/train_net.py."""

from .allocator import ALLOCATOR_ENV_VAR, configure_allocator, retain_freed_memory
from .checkpoint import LRSchedulerHook, SafeDetectionCheckpointer, safe_load_checkpoint
from .config import apply_overrides, check_override_key
from .distributed import create_ddp_model, init_torchrun_process_group, launched_by_torchrun
from .ema import EMAHook, ModelEMA, unwrap_model
from .env import REPO_ROOT, get_config, has_compiled_detectron2_ops
from .optim import get_default_optimizer_params, keyword_lr_factor
from .schedules import coco_schedule, epoch_schedule, iters_for_epochs, multistep_schedule
from .trainer import DetrTrainer

__all__ = [
    "ALLOCATOR_ENV_VAR",
    "DetrTrainer",
    "EMAHook",
    "LRSchedulerHook",
    "ModelEMA",
    "REPO_ROOT",
    "SafeDetectionCheckpointer",
    "apply_overrides",
    "check_override_key",
    "coco_schedule",
    "configure_allocator",
    "create_ddp_model",
    "epoch_schedule",
    "get_config",
    "get_default_optimizer_params",
    "has_compiled_detectron2_ops",
    "init_torchrun_process_group",
    "iters_for_epochs",
    "keyword_lr_factor",
    "launched_by_torchrun",
    "multistep_schedule",
    "retain_freed_memory",
    "safe_load_checkpoint",
    "unwrap_model",
]
