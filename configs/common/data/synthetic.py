"""Data config of the built-in synthetic dataset ("synthetic_shapes_train" / "_val").

DETR's augmentation scaled to the dataset's image size (256..320 px a side, test short side 288,
i.e. DETR's 800 scaled by 0.36): random flip, then either multi-scale resizing of the short side
(192..320) or, with probability 0.5, resize (160..224), random crop (144..224), multi-scale resize.
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

TRAIN_SCALES = (192, 208, 224, 240, 256, 272, 288, 304, 320)
MAX_SIZE = 480  # DETR's 1333 / 800 ratio

dataloader = OmegaConf.create()

# batches a function of (seed, position): a resumed training gets the same batches
dataloader.train = L(build_resumable_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synthetic_shapes_train"),
    mapper=L(DetrDatasetMapper)(
        augmentation=[
            L(T.RandomFlip)(),
            L(T.ResizeShortestEdge)(
                short_edge_length=TRAIN_SCALES, max_size=MAX_SIZE, sample_style="choice"
            ),
        ],
        augmentation_with_crop=[
            L(T.RandomFlip)(),
            L(T.ResizeShortestEdge)(short_edge_length=(160, 192, 224), sample_style="choice"),
            L(T.RandomCrop)(crop_type="absolute_range", crop_size=(144, 224)),
            L(T.ResizeShortestEdge)(
                short_edge_length=TRAIN_SCALES, max_size=MAX_SIZE, sample_style="choice"
            ),
        ],
        is_train=True,
        mask_on=False,
        img_format="RGB",
    ),
    total_batch_size=8,
    num_workers=1,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synthetic_shapes_val", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        augmentation=[L(T.ResizeShortestEdge)(short_edge_length=288, max_size=MAX_SIZE)],
        augmentation_with_crop=None,
        is_train=False,
        mask_on=False,
        img_format="RGB",
    ),
    num_workers=1,
)

dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    tasks=("bbox",),
    use_fast_impl=has_compiled_detectron2_ops(),
)
