"""Ground-truth boxes of test inputs, whose mapper drops the annotations."""

from typing import Any, Dict, List, Sequence, Union

import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode, Boxes, Instances

from ..data import load_dataset_dicts

__all__ = ["GroundTruthBoxes"]


class GroundTruthBoxes:
    """Looks up an input's annotations by "image_id" in registered datasets and scales them to
    the model input, like the test mapper scales the image (a resize: input size / original
    "height", "width").

    Args:
        dataset_names: one or more registered dataset names.
    """

    def __init__(self, dataset_names: Union[str, Sequence[str]]):
        names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
        self._by_id: Dict[Any, Dict[str, Any]] = {}
        self._class_map: Dict[int, int] = {}
        for name in names:
            meta = MetadataCatalog.get(name)
            self._class_map.update(getattr(meta, "thing_dataset_id_to_contiguous_id", {}) or {})
            for d in load_dataset_dicts(name):
                self._by_id[d["image_id"]] = d

    def record(self, x: Dict[str, Any]) -> Dict[str, Any]:
        if "image_id" not in x:
            raise KeyError("input has no 'image_id': cannot look up its ground truth")
        if x["image_id"] not in self._by_id:
            raise KeyError(f"image_id {x['image_id']!r} is in none of the datasets")
        return self._by_id[x["image_id"]]

    def boxes_xyxy(self, x: Dict[str, Any]) -> torch.Tensor:
        """(M, 4) float32 non-crowd ground-truth boxes of input `x` in its input pixels."""
        return self._read(x)[0]

    def instances(self, x: Dict[str, Any]) -> Instances:
        """Ground truth of input `x` as Instances (gt_boxes, gt_classes) of its input size."""
        boxes, classes = self._read(x)
        h, w = x["image"].shape[-2:]
        inst = Instances((int(h), int(w)))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = classes
        return inst

    def _read(self, x):
        record = self.record(x)
        annos = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        h, w = x["image"].shape[-2:]
        oh, ow = record.get("height", x.get("height", h)), record.get("width", x.get("width", w))
        scale = torch.tensor([w / ow, h / oh, w / ow, h / oh], dtype=torch.float32)
        boxes: List[List[float]] = [
            BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos
        ]
        classes = [self._class_map.get(a["category_id"], a["category_id"]) for a in annos]
        boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) * scale
        return boxes_t, torch.tensor(classes, dtype=torch.int64)
