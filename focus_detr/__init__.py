"""Focus-DETR, DINO and Sparse DETR for detectron2."""

__version__ = "0.1.0"
