"""Helpers of the tools' tests: the tiny configs (one file offering the three encoders) and
running a tool's `main` in-process."""

import importlib.util
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# the tiny DINO of projects/dino with a swappable encoder: one config, three encoders
TINY_CONFIG = str(
    REPO_ROOT / "projects" / "sparse_detr" / "configs" / "dino_sparse_tiny_synthetic.py"
)
FOCUS_TINY = str(REPO_ROOT / "projects" / "focus_detr" / "configs" / "focus_detr_tiny_synthetic.py")
DINO_TINY = str(REPO_ROOT / "projects" / "dino" / "configs" / "dino_tiny_synthetic.py")
DENSE = "model.transformer.encoder.name=dense"
SPARSE = "model.transformer.encoder.name=sparse"
FOCUS = "model.transformer.encoder.name=focus"
SMALL_INPUT = (96, 128)  # H, W: 4 feature levels of 12x16, 6x8, 3x4, 2x2


def load_tool(name: str):
    """The module tools/<name>.py (not a package: loaded from its file)."""
    path = REPO_ROOT / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_model(encoder_override: str = FOCUS, device: str = "cpu"):
    """(cfg, model) of the tiny config with the given encoder, random init, eval mode."""
    import torch

    from focus_detr.analysis import build_model, load_config

    torch.manual_seed(0)
    cfg = load_config(TINY_CONFIG, [encoder_override])
    return cfg, build_model(cfg, device)
