"""Meta-architectures (registered in detectron2's META_ARCH_REGISTRY on import)."""
from .dino import DINO
from .dino_config import add_dino_config

__all__ = ["DINO", "add_dino_config"]
