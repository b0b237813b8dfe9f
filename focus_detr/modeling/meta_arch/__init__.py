"""Meta-architectures (registered in detectron2's META_ARCH_REGISTRY on import)."""

from .dino import DINO
from .dino_config import add_dino_config
from .focus_detr import FocusDETR, add_focus_detr_config

__all__ = ["DINO", "FocusDETR", "add_dino_config", "add_focus_detr_config"]
