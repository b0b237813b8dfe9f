"""Helpers of the deployment tests: built-in dataset images, the tiny models, eager detections and
the set comparison with its tolerances (justified in test_deploy_onnx.py's docstring)."""

from pathlib import Path

import numpy as np
import torch
from detectron2.config import LazyConfig
from detectron2.structures import ImageList

from focus_detr.data.synthetic_shapes import (
    SyntheticShapesRecipe,
    render_scene,
    scene_rng,
)
from focus_detr.deploy import ExportableDetector, set_distance
from focus_detr.modeling import instantiate_model


def dataset_image(index: int, size=(192, 256)) -> torch.Tensor:
    """Image `index` of the built-in dataset's val split, cropped to `size` (H, W): (3, H, W) uint8."""
    recipe = SyntheticShapesRecipe()
    image, _ = render_scene(scene_rng(recipe, "val", index), recipe)
    h, w = size
    return torch.from_numpy(np.ascontiguousarray(image[:h, :w])).permute(2, 0, 1).contiguous()


ROOT = Path(__file__).parents[1]
TINY = {
    "dino": "projects/dino/configs/dino_tiny_synthetic.py",
    "focus_detr": "projects/focus_detr/configs/focus_detr_tiny_synthetic.py",
    "sparse_detr": "projects/sparse_detr/configs/dino_sparse_tiny_synthetic.py",
}
SIZE = (192, 256)
TINY_SCORE_TOL, TINY_BOX_TOL = 1e-6, 1e-3
R50_SCORE_TOL, R50_BOX_TOL = 5e-4, 0.1


def tiny_model(name):
    torch.manual_seed(0)
    return instantiate_model(LazyConfig.load(str(ROOT / TINY[name])).model).eval()


def proposal_order_margin(model, image):
    """Smallest score gap between consecutive two-stage proposals (and at the cut). The decoder
    pairs its i-th learned query with the i-th proposal, so a gap within float32 rounding makes
    eager float32 itself ambiguous (it then disagrees with float64); such images are skipped."""
    x = (image.float() - model.pixel_mean) / model.pixel_std
    with torch.no_grad():
        scores = model.compute_outputs(ImageList(x[None], [tuple(image.shape[1:])]))
    scores = scores["enc_topk_scores"][0]
    return float((scores[:-1] - scores[1:]).min())


def unambiguous_images(model, count=2, candidates=8, margin=1e-5):
    chosen = [
        i
        for i in range(candidates)
        if proposal_order_margin(model, dataset_image(i, SIZE)) > margin
    ][:count]
    assert len(chosen) == count, "too few built-in images with well-separated proposal scores"
    return chosen


def eager(model, image):
    with torch.no_grad():
        return ExportableDetector(model)(image)


def assert_same_sets(a, b, score_tol, box_tol):
    assert len(a[1]) == len(b[1])
    assert set_distance(a, b, score_tol, box_tol) <= 1, "a detection has no partner"
    assert set_distance(b, a, score_tol, box_tol) <= 1, "a detection has no partner"
