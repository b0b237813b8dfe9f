"""COCO AP over the same ground truth that training loads."""

import contextlib
import io
import logging

from detectron2.evaluation import COCOEvaluator as _D2COCOEvaluator
from detectron2.structures import BoxMode

from ..data.build import droppable_box

__all__ = ["COCOEvaluator"]

logger = logging.getLogger(__name__)


class COCOEvaluator(_D2COCOEvaluator):
    """detectron2's `COCOEvaluator`, whose ground truth leaves out the annotations that
    `focus_detr.data.get_detection_dataset_dicts` drops at loading (boxes with a zero, negative
    or non-finite size, or entirely outside their image): such a box can never be detected, so
    counting it as ground truth would only lower the recall. Same arguments as detectron2's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not getattr(self, "_do_evaluation", False):
            return
        dataset = self._coco_api.dataset
        images = {img["id"]: img for img in dataset.get("images", [])}
        kept, dropped = [], 0
        for anno in dataset["annotations"]:
            img = images.get(anno["image_id"], {})
            box = {"bbox": anno.get("bbox", ()), "bbox_mode": BoxMode.XYWH_ABS}
            if droppable_box(box, img.get("width"), img.get("height")) is None:
                kept.append(anno)
            else:
                dropped += 1
        if dropped:
            dataset["annotations"] = kept
            with contextlib.redirect_stdout(io.StringIO()):
                self._coco_api.createIndex()
            logger.info(
                f"{self._metadata.name}: {dropped} ground-truth annotation(s) with a degenerate "
                "box or a box entirely outside the image left out of the evaluation (as at "
                "loading)"
            )
