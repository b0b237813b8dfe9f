"""Helpers of the deployment tests: built-in dataset images."""
import numpy as np
import torch

from focus_detr.data.synthetic_shapes import SyntheticShapesRecipe, render_scene, scene_rng


def dataset_image(index: int, size=(192, 256)) -> torch.Tensor:
    """Image `index` of the built-in dataset's val split, cropped to `size` (H, W): (3, H, W) uint8."""
    recipe = SyntheticShapesRecipe()
    image, _ = render_scene(scene_rng(recipe, "val", index), recipe)
    h, w = size
    return torch.from_numpy(np.ascontiguousarray(image[:h, :w])).permute(2, 0, 1).contiguous()
