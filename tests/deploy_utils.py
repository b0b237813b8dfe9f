"""Helpers of the deployment tests: built-in dataset images and detections compared as sets."""
import numpy as np
import torch

from focus_detr.data.synthetic_shapes import SyntheticShapesRecipe, render_scene, scene_rng


def dataset_image(index: int, size=(192, 256)) -> torch.Tensor:
    """Image `index` of the built-in dataset's val split, cropped to `size` (H, W): (3, H, W) uint8."""
    recipe = SyntheticShapesRecipe()
    image, _ = render_scene(scene_rng(recipe, "val", index), recipe)
    h, w = size
    return torch.from_numpy(np.ascontiguousarray(image[:h, :w])).permute(2, 0, 1).contiguous()


def set_distance(a, b, score_scale: float, box_scale: float) -> float:
    """Largest over detections of `a` (boxes, scores, labels) of the distance to the closest
    same-label detection of `b`, in units of the scales (<= 1: every detection has a partner)."""
    boxes_a, scores_a, labels_a = (torch.as_tensor(t) for t in a)
    boxes_b, scores_b, labels_b = (torch.as_tensor(t) for t in b)
    box = (boxes_a[:, None].double() - boxes_b[None].double()).abs().amax(-1) / box_scale
    score = (scores_a[:, None].double() - scores_b[None].double()).abs() / score_scale
    distance = torch.maximum(box, score).masked_fill(labels_a[:, None] != labels_b[None], float("inf"))
    return float(distance.min(1).values.max())
