"""Loading dataset dicts with errors that name the dataset and its files."""

import itertools
import logging
import warnings

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data.build import (
    check_metadata_consistency,
    filter_images_with_only_crowd_annotations,
    print_instances_class_histogram,
)

from .detr_dataset_mapper import is_degenerate_box, is_outside_image

__all__ = ["droppable_box", "get_detection_dataset_dicts", "load_dataset_dicts"]

logger = logging.getLogger(__name__)


def load_dataset_dicts(name):
    """`DatasetCatalog.get(name)`, with load failures re-raised naming the dataset and its file.

    Raises:
        KeyError: `name` is not registered (the message lists the registered names).
        FileNotFoundError: the annotation file or image directory does not exist.
        RuntimeError: the annotation file cannot be parsed.
    """
    if name not in DatasetCatalog.list():
        raise KeyError(
            f"dataset {name!r} is not registered; registered datasets: "
            f"{', '.join(sorted(DatasetCatalog.list()))}"
        )
    json_file = MetadataCatalog.get(name).get("json_file", None)
    source = f" (annotation file {json_file})" if json_file else ""
    try:
        dicts = DatasetCatalog.get(name)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"dataset {name!r}{source}: file not found: {e}") from e
    except (OSError, ValueError, KeyError, TypeError, IndexError, AssertionError) as e:
        # json.JSONDecodeError is a ValueError; pycocotools asserts on a wrong structure
        raise RuntimeError(f"cannot load dataset {name!r}{source}: {type(e).__name__}: {e}") from e
    if not len(dicts):
        raise RuntimeError(f"dataset {name!r}{source} has no images")
    return dicts


def droppable_box(anno, width, height):
    """Why an annotation is dropped at loading (and from the evaluation's ground truth): "size"
    (zero, negative or non-finite), "outside" (no area inside the image), or None to keep."""
    if is_degenerate_box(anno["bbox"], anno["bbox_mode"]):
        return "size"
    if is_outside_image(anno["bbox"], anno["bbox_mode"], width, height):
        return "outside"
    return None


def _drop_unusable_boxes(name, dicts):
    dropped = {"size": 0, "outside": 0}
    examples = {"size": [], "outside": []}
    for d in dicts:
        annos = d.get("annotations")
        if not annos:
            continue
        keep = []
        for a in annos:
            why = droppable_box(a, d.get("width"), d.get("height"))
            if why is None:
                keep.append(a)
                continue
            dropped[why] += 1
            if len(examples[why]) < 3 and d["file_name"] not in examples[why]:
                examples[why].append(d["file_name"])
        if len(keep) != len(annos):
            d["annotations"] = keep
    what = {
        "size": "a zero, negative or non-finite box size",
        "outside": "a box entirely outside the image",
    }
    for why, count in dropped.items():
        if count:
            warnings.warn(
                f"dataset {name!r}: dropped {count} annotation(s) with {what[why]} (in e.g. "
                f"{', '.join(examples[why])}); they are left out of the evaluation's ground "
                "truth too",
                stacklevel=3,
            )


def _check_an_image_reads(name, dicts):
    """Raise unless at least one image of the dataset can be read: decode images in order until
    one succeeds (the first, in a sound dataset). Without this, a dataset whose images are all
    missing or undecodable gives per-image warnings and then an unrelated error from the
    loader's retry logic."""
    files = [d["file_name"] for d in dicts if "file_name" in d]
    if not files:
        return
    errors = []
    for f in files:
        try:
            utils.read_image(f)
            return
        except (OSError, ValueError, SyntaxError) as e:  # what PIL raises on bad files
            if len(errors) < 3:
                errors.append(f"{f}: {type(e).__name__}: {e}")
    image_root = MetadataCatalog.get(name).get("image_root", None)
    where = f" under {image_root}" if image_root else ""
    raise RuntimeError(
        f"dataset {name!r}: none of its {len(files)} images could be read{where} (e.g. "
        f"{'; '.join(errors)}); check the image directory registered for the dataset"
    )


def get_detection_dataset_dicts(names, filter_empty=True, check_consistency=True):
    """Dataset dicts of one or more registered datasets, ready for a detection loader.

    Like detectron2's function of the same name (use it in configs the same way), plus: clear
    errors naming the dataset and file; annotations with degenerate boxes or boxes entirely
    outside the image dropped with a warning (`droppable_box`; the evaluator
    `focus_detr.evaluation.COCOEvaluator` drops the same ones from its ground truth);
    images without annotations removed (with a log line) when `filter_empty`; an error naming
    the dataset when none of its images can be read.

    Args:
        names (str or list[str]): registered dataset names.
        filter_empty (bool): remove images without (non-crowd) annotations (for training).
        check_consistency (bool): require the same class names in every dataset.

    Returns:
        list[dict] in detectron2's dataset format.
    """
    if isinstance(names, str):
        names = [names]
    if not len(names):
        raise ValueError("no dataset names given")
    per_dataset = [load_dataset_dicts(n) for n in names]
    for name, dicts in zip(names, per_dataset):
        _check_an_image_reads(name, dicts)
        _drop_unusable_boxes(name, dicts)
    dicts = list(itertools.chain.from_iterable(per_dataset))
    has_instances = "annotations" in dicts[0]
    if filter_empty and has_instances:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    if check_consistency and has_instances:
        classes = MetadataCatalog.get(names[0]).get("thing_classes", None)
        if classes is not None:
            check_metadata_consistency("thing_classes", names)
            print_instances_class_histogram(dicts, classes)
    if not dicts:
        raise RuntimeError(f"no image with annotations in {', '.join(names)}")
    return dicts
