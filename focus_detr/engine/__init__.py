"""Training and evaluation machinery used by tools/train_net.py."""
from .env import REPO_ROOT, get_config, has_compiled_detectron2_ops

__all__ = ["REPO_ROOT", "get_config", "has_compiled_detectron2_ops"]
