"""Registration of the built-in synthetic dataset in detectron2's catalogs.

The splits are generated lazily, the first time one is loaded (`DatasetCatalog.get`), into
``$FOCUS_DETR_DATASETS/synthetic_shapes_<version>/<split>/`` (default
``~/.cache/focus_detr/datasets``). A split is written to a temporary directory and renamed into
place, under a file lock, so concurrent processes (e.g. torchrun workers) never see a partial
split, and an interrupted generation leaves nothing behind that looks complete; the next
generation of that split removes what it left. Directories are created with the usual umask
permissions, so a shared cache is readable by other users.
"""

import contextlib
import logging
import os
import shutil
import uuid
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances

from .synthetic_shapes import CATEGORIES, SyntheticShapesRecipe, generate_split

__all__ = [
    "SYNTHETIC_DATASETS",
    "datasets_root",
    "synthetic_split_dir",
    "prepare_synthetic_split",
    "register_synthetic_datasets",
]

logger = logging.getLogger(__name__)

# registered name -> split of the built-in recipe
SYNTHETIC_DATASETS = {"synthetic_shapes_train": "train", "synthetic_shapes_val": "val"}


def datasets_root():
    """Directory of generated datasets: $FOCUS_DETR_DATASETS or ~/.cache/focus_detr/datasets."""
    env = os.environ.get("FOCUS_DETR_DATASETS")
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return cache / "focus_detr" / "datasets"


def synthetic_split_dir(split, recipe=None, root=None):
    """Where `split` of `recipe` lives: <root>/synthetic_shapes_<version>/<split>."""
    recipe = recipe or SyntheticShapesRecipe()
    root = Path(root) if root is not None else datasets_root()
    return root / f"synthetic_shapes_{recipe.version}" / split


@contextlib.contextmanager
def _file_lock(path):
    """An exclusive advisory lock on `path` (POSIX); a no-op where fcntl does not exist."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename below still keeps splits consistent
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_stale_temporaries(directory, split):
    """Remove what killed generations of `split` left behind. Called under the split's lock, so
    no live generation of it owns any of them."""
    for stale in directory.glob(f".{split}.tmp-*"):
        logger.info("Removing %s, left by an interrupted generation", stale)
        shutil.rmtree(stale, ignore_errors=True)


def prepare_synthetic_split(split, recipe=None, root=None, progress=True):
    """Generate `split` unless it exists; return its directory (holding instances.json, images/).

    Safe when several processes call it at once: one generates, the others wait for the lock
    and then find the finished split.
    """
    recipe = recipe or SyntheticShapesRecipe()
    target = synthetic_split_dir(split, recipe, root)
    if (target / "instances.json").is_file():
        return target
    with _file_lock(target.parent / f".{split}.lock"):
        if (target / "instances.json").is_file():  # another process finished it meanwhile
            return target
        if target.exists():  # an incomplete split (only possible if written by other means)
            shutil.rmtree(target)
        _remove_stale_temporaries(target.parent, split)
        # os.mkdir honours the umask (a shared cache stays readable); mkdtemp would give 0700
        tmp = target.parent / f".{split}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            logger.info("Generating the built-in dataset split %r into %s", split, target)
            generate_split(tmp, split, recipe, progress=progress)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def register_synthetic_datasets(root=None):
    """Register "synthetic_shapes_train" and "synthetic_shapes_val" (idempotent).

    Registration goes through detectron2's `register_coco_instances`, so metadata
    (`json_file`, `image_root`, `evaluator_type="coco"`, class names) is the usual COCO one; the
    loader is then wrapped so that the split is generated on first use.

    Args:
        root: datasets directory; default `datasets_root()` evaluated now.
    """
    root = Path(root) if root is not None else datasets_root()
    names = [c["name"] for c in CATEGORIES]
    for name, split in SYNTHETIC_DATASETS.items():
        if name in DatasetCatalog.list():
            continue
        split_dir = synthetic_split_dir(split, root=root)
        register_coco_instances(
            name,
            {"thing_classes": names},
            str(split_dir / "instances.json"),
            str(split_dir / "images"),
        )
        DatasetCatalog.remove(name)
        DatasetCatalog.register(
            name, lambda name=name, split=split, root=root: _load_synthetic_at(name, split, root)
        )
        MetadataCatalog.get(name).set(synthetic_split=split)


def _load_synthetic_at(name, split, root):
    split_dir = prepare_synthetic_split(split, root=root)
    return load_coco_json(str(split_dir / "instances.json"), str(split_dir / "images"), name)
