"""Facts about the runtime environment that configs and tools depend on."""

import importlib.machinery
from pathlib import Path

from detectron2.config import LazyConfig

__all__ = ["has_compiled_detectron2_ops", "get_config", "REPO_ROOT"]

# the checkout holding configs/ and projects/ (focus_detr is installed in editable mode)
REPO_ROOT = Path(__file__).resolve().parents[2]


def has_compiled_detectron2_ops():
    """True when `detectron2._C` is the real compiled extension (not a pure-Python stand-in).

    Our installer's build has no compiled ops, so e.g. `COCOEvaluator` must get
    `use_fast_impl=False`; a user's own detectron2 build keeps the fast path.
    """
    try:
        from detectron2 import _C
    except ImportError:
        return False
    origin = getattr(_C, "__file__", "") or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def get_config(config_path):
    """Load a shared LazyConfig file by its path under `configs/`, e.g. "common/train.py".

    Returns:
        omegaconf.DictConfig of the file's top-level objects.
    """
    path = REPO_ROOT / "configs" / config_path
    if not path.is_file():
        raise FileNotFoundError(f"{config_path!r} is not a config under {REPO_ROOT / 'configs'}")
    return LazyConfig.load(str(path))
