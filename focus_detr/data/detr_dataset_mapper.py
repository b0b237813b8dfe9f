"""DETR-style dataset mapper: read an image, augment it, return a tensor and `Instances`."""

import copy
import logging
import math
import warnings

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

__all__ = ["DetrDatasetMapper", "is_degenerate_box", "is_outside_image"]

logger = logging.getLogger(__name__)


def is_degenerate_box(bbox, bbox_mode):
    """True when a box has zero, negative or non-finite width or height (in its own mode)."""
    if len(bbox) != 4 or not all(math.isfinite(float(v)) for v in bbox):
        return True
    if bbox_mode == BoxMode.XYWH_ABS:
        w, h = bbox[2], bbox[3]
    elif bbox_mode == BoxMode.XYXY_ABS:
        w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
    else:  # rotated / relative modes: leave them to detectron2
        return False
    return w <= 0 or h <= 0


def is_outside_image(bbox, bbox_mode, width, height):
    """True when an (absolute XYWH/XYXY) box has no area inside the `width` x `height` image;
    False for other box modes or an unknown image size."""
    if width is None or height is None or len(bbox) != 4:
        return False
    x0, y0 = float(bbox[0]), float(bbox[1])
    if bbox_mode == BoxMode.XYWH_ABS:
        x1, y1 = x0 + float(bbox[2]), y0 + float(bbox[3])
    elif bbox_mode == BoxMode.XYXY_ABS:
        x1, y1 = float(bbox[2]), float(bbox[3])
    else:
        return False
    return x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height


class DetrDatasetMapper:
    """Map a detectron2 dataset dict to a DETR training/inference input.

    1. reads the image (`img_format`), checks its size against the dict;
    2. applies `augmentation`, or, during training and with probability `crop_prob`,
       `augmentation_with_crop` (DETR's "random select" between plain multi-scale resizing and a
       resize-crop-resize chain);
    3. returns ``{"image": uint8 tensor (C, H, W), "instances": Instances, ...}``; training only
       keeps annotations (boxes transformed, empty ones after cropping removed).

    Annotations with a zero, negative or non-finite box size in the input are dropped with a
    warning naming the image (such a box would otherwise be "repaired" by the box transform,
    which sorts corners). An image that cannot be decoded is skipped with a warning during
    training (the loader takes another one) and raises an error naming the file at inference.

    Args:
        augmentation (list[Augmentation]): the default transforms.
        augmentation_with_crop (list[Augmentation] or None): the alternative chain with a crop.
        is_train (bool): training mode (random branch, annotations kept).
        mask_on (bool): keep segmentation annotations.
        img_format (str): image format given to `detection_utils.read_image` ("RGB" or "BGR").
        crop_prob (float): probability of the crop chain during training (DETR: 0.5).
    """

    def __init__(
        self,
        augmentation,
        augmentation_with_crop=None,
        is_train=True,
        mask_on=False,
        img_format="RGB",
        crop_prob=0.5,
    ):
        self.augmentation = T.AugmentationList(list(augmentation))
        self.augmentation_with_crop = (
            T.AugmentationList(list(augmentation_with_crop))
            if augmentation_with_crop is not None
            else None
        )
        self.is_train = is_train
        self.mask_on = mask_on
        self.img_format = img_format
        self.crop_prob = crop_prob
        mode = "training" if is_train else "inference"
        logger.info(
            f"[DetrDatasetMapper] {mode} augmentation: {self.augmentation}, "
            f"with crop: {self.augmentation_with_crop}"
        )

    def _read(self, dataset_dict):
        file_name = dataset_dict["file_name"]
        try:
            image = utils.read_image(file_name, format=self.img_format)
        except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three on bad files
            msg = f"cannot decode image file {file_name}: {type(e).__name__}: {e}"
            if self.is_train:
                warnings.warn(msg + " (skipped; another image is loaded instead)", stacklevel=2)
                return None
            raise RuntimeError(msg) from e
        utils.check_image_size(dataset_dict, image)
        return image

    def _valid_annotations(self, dataset_dict):
        kept, dropped = [], 0
        for anno in dataset_dict.pop("annotations"):
            if anno.get("iscrowd", 0):
                continue
            if is_degenerate_box(anno["bbox"], anno["bbox_mode"]):
                dropped += 1
                continue
            # integer boxes would be truncated by the in-place box transforms
            anno["bbox"] = [float(v) for v in anno["bbox"]]
            if not self.mask_on:
                anno.pop("segmentation", None)
            anno.pop("keypoints", None)
            kept.append(anno)
        if dropped:
            warnings.warn(
                f"{dataset_dict['file_name']}: dropped {dropped} annotation(s) with a "
                "zero, negative or non-finite box size",
                stacklevel=2,
            )
        return kept

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one image in detectron2's dataset format.

        Returns:
            dict with "image" (uint8 (C, H, W)), the input keys, and "instances" when training;
            None when training and the image cannot be decoded.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read(dataset_dict)
        if image is None:
            return None
        augs = self.augmentation
        if (
            self.is_train
            and self.augmentation_with_crop is not None
            and np.random.rand() < self.crop_prob
        ):
            augs = self.augmentation_with_crop
        aug_input = T.AugInput(image)
        transforms = augs(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            annos = [
                utils.transform_instance_annotations(a, transforms, image_shape)
                for a in self._valid_annotations(dataset_dict)
            ]
            instances = utils.annotations_to_instances(annos, image_shape)
            # boxes cut away by the crop are legitimately empty: removed without a warning
            dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict
