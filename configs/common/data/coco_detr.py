"""Data config of COCO 2017 with DETR's augmentation.

COCO is registered by detectron2 itself ("coco_2017_train" / "coco_2017_val") under
$DETECTRON2_DATASETS (default ./datasets): coco/train2017, coco/val2017, coco/annotations.
Training: random flip, then either the short side resized to 480..800 (max 1333) or, with
probability 0.5, resize (400/500/600), random crop (384..600), resize 480..800. Test: 800 / 1333.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader
from omegaconf import OmegaConf

from focus_detr.data import (
    DetrDatasetMapper,
    build_resumable_train_loader,
    get_detection_dataset_dicts,
)
from focus_detr.engine import has_compiled_detectron2_ops
from focus_detr.evaluation import COCOEvaluator  # ground truth as loaded for training

TRAIN_SCALES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)

dataloader = OmegaConf.create()

# batches a function of (seed, position): a resumed training gets the same batches
dataloader.train = L(build_resumable_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train"),
    mapper=L(DetrDatasetMapper)(
        augmentation=[
            L(T.RandomFlip)(),
            L(T.ResizeShortestEdge)(
                short_edge_length=TRAIN_SCALES, max_size=1333, sample_style="choice"
            ),
        ],
        augmentation_with_crop=[
            L(T.RandomFlip)(),
            L(T.ResizeShortestEdge)(short_edge_length=(400, 500, 600), sample_style="choice"),
            L(T.RandomCrop)(crop_type="absolute_range", crop_size=(384, 600)),
            L(T.ResizeShortestEdge)(
                short_edge_length=TRAIN_SCALES, max_size=1333, sample_style="choice"
            ),
        ],
        is_train=True,
        mask_on=False,
        img_format="RGB",
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        augmentation=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        augmentation_with_crop=None,
        is_train=False,
        mask_on=False,
        img_format="RGB",
    ),
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    tasks=("bbox",),
    use_fast_impl=has_compiled_detectron2_ops(),
)
