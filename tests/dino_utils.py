"""Helpers shared by the DINO tests: a tiny model built from the project's configs, and
synthetic detectron2 inputs."""

import torch
from detectron2.config import LazyConfig
from detectron2.structures import Boxes, Instances

from focus_detr.engine import REPO_ROOT
from focus_detr.modeling import instantiate_model

TINY_MODEL = str(REPO_ROOT / "projects/dino/configs/models/dino_tiny.py")
R50_MODEL = str(REPO_ROOT / "projects/dino/configs/models/dino_r50.py")


def tiny_cfg(num_classes=5, num_queries=30):
    cfg = LazyConfig.load(TINY_MODEL)
    cfg.model.num_classes = num_classes
    cfg.model.transformer.num_queries = num_queries
    cfg.model.denoising.num_dn_queries = 8
    cfg.model.select_box_nums_for_evaluation = 20
    return cfg


def tiny_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    return instantiate_model(tiny_cfg(**kwargs).model)


def make_instances(h, w, n, num_classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    inst = Instances((h, w))
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.6
    wh = (torch.rand(n, 2, generator=g) * 0.3 + 0.05) * torch.tensor([w, h])
    inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
    inst.gt_classes = torch.randint(0, num_classes, (n,), generator=g)
    return inst


def make_batch(sizes, counts, num_classes=5, seed=0):
    """detectron2 inputs: uint8 images of the given (h, w) sizes with `counts` random boxes."""
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8),
            "height": h,
            "width": w,
            "instances": make_instances(h, w, n, num_classes, seed + i),
        }
        for i, ((h, w), n) in enumerate(zip(sizes, counts))
    ]
