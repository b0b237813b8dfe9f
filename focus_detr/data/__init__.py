"""Data: the built-in synthetic dataset, a DETR dataset mapper, dataset loading with clear errors.

Importing this package registers "synthetic_shapes_train" and "synthetic_shapes_val" in
detectron2's catalogs (generated on first use, see `datasets.py`).
"""

from .build import get_detection_dataset_dicts, load_dataset_dicts
from .datasets import (
    SYNTHETIC_DATASETS,
    datasets_root,
    prepare_synthetic_split,
    register_synthetic_datasets,
    synthetic_split_dir,
)
from .detr_dataset_mapper import DetrDatasetMapper, is_degenerate_box, is_outside_image
from .resumable_loader import ResumableTrainLoader, build_resumable_train_loader
from .synthetic_shapes import CATEGORIES, SyntheticShapesRecipe, generate_split, render_scene

__all__ = [
    "CATEGORIES",
    "DetrDatasetMapper",
    "ResumableTrainLoader",
    "SYNTHETIC_DATASETS",
    "SyntheticShapesRecipe",
    "build_resumable_train_loader",
    "datasets_root",
    "generate_split",
    "get_detection_dataset_dicts",
    "is_degenerate_box",
    "is_outside_image",
    "load_dataset_dicts",
    "prepare_synthetic_split",
    "register_synthetic_datasets",
    "render_scene",
    "synthetic_split_dir",
]

register_synthetic_datasets()
