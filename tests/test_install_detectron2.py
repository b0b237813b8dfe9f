"""tools/install_detectron2.py and the detectron2 runtime it installs."""

import os
import re
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import REPO_ROOT, subprocess_env

import detectron2
from tests.tools_utils import load_tool

INSTALLED = Path(detectron2.__file__).parent


inst = load_tool("install_detectron2")
ours = pytest.mark.skipif(
    inst.read_patch_level(INSTALLED) is None,
    reason="detectron2 here is a user's own build, not this installer's",
)


def test_fix_aliases_on_a_snippet():
    src = (
        "a = np.int(x) + np.int64(1)\nb = np.float(y); c = np.float32(z)\n"
        "m = x.astype(np.bool) | np.bool_(0)\ns = np.str(v); t = np.str_(v)\n"
        "o = np.object; img.resize(s, Image.LINEAR); Image.BILINEAR\n"
        "q = snp.intx; np.integer\n"
    )
    out, n = inst.fix_aliases(src)
    assert out == (
        "a = int(x) + np.int64(1)\nb = float(y); c = np.float32(z)\n"
        "m = x.astype(bool) | np.bool_(0)\ns = str(v); t = np.str_(v)\n"
        "o = object; img.resize(s, Image.BILINEAR); Image.BILINEAR\n"
        "q = snp.intx; np.integer\n"
    )
    assert n == 6


def test_unexpected_sdist_text_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="does not contain"):
        inst.patch_setup_py("setup(name='something-else')")
    (tmp_path / "detectron2" / "data").mkdir(parents=True)
    (tmp_path / "detectron2" / "data" / "common.py").write_text("# a different release\n")
    with pytest.raises(RuntimeError, match="detectron2/data/common.py .*exactly once"):
        inst.apply_source_fixes(tmp_path)


@pytest.mark.parametrize("data_filter", [True, False], ids=["tarfile-filter", "own-checks"])
def test_sdist_extraction_refuses_members_outside_the_target(tmp_path, monkeypatch, data_filter):
    """With tarfile's "data" filter (Python >= 3.12 and backports) or without it (older 3.9-3.11
    patch releases): plain members are extracted, a member escaping the folder is refused."""
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    payload = tmp_path / "payload.txt"
    payload.write_text("ok")
    good, bad = tmp_path / "good.tar.gz", tmp_path / "bad.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        tar.add(payload, arcname="pkg-0.6/setup.py")
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(payload, arcname="pkg-0.6/setup.py")
        tar.add(payload, arcname="../escaped.txt")
    inst.extract_sdist(good, tmp_path / "out")
    assert (tmp_path / "out" / "pkg-0.6" / "setup.py").read_text() == "ok"
    with pytest.raises((RuntimeError, tarfile.TarError), match="escaped.txt"):
        inst.extract_sdist(bad, tmp_path / "out2")
    assert not (tmp_path / "escaped.txt").exists()


def test_patch_level_marker(tmp_path):
    assert inst.read_patch_level(tmp_path) is None  # not ours: left alone
    (tmp_path / inst.PATCH_MARKER).write_text("Patched by focus_detr ...\n")
    assert inst.read_patch_level(tmp_path) == 1
    (tmp_path / inst.PATCH_MARKER).write_text("Patched\npatch level: 7\n")
    assert inst.read_patch_level(tmp_path) == 7


def test_skips_when_detectron2_is_importable(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "install_detectron2.py"),
            "--cache-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    level = inst.read_patch_level(INSTALLED)
    if level is None:
        assert "leaving it as it is" in proc.stdout
    else:
        assert level == inst.PATCH_LEVEL, "installed build is older: run make setup"
        assert f"(patch level {level}) is already installed" in proc.stdout
    assert not any(tmp_path.iterdir())  # nothing downloaded or built


def test_detectron2_imports():
    import detectron2.checkpoint  # noqa: F401
    import detectron2.data  # noqa: F401
    import detectron2.engine  # noqa: F401
    import detectron2.evaluation  # noqa: F401
    import detectron2.model_zoo  # noqa: F401  (used pkg_resources before the patch)
    import detectron2.modeling  # noqa: F401

    assert detectron2.__version__ == "0.6"


@ours
def test_compiled_op_use_raises_a_clear_error_naming_it():
    from detectron2 import _C
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    with pytest.raises(ImportError, match=r"detectron2\._C\.box_iou_rotated is not available"):
        pairwise_iou_rotated(torch.zeros(1, 5), torch.zeros(1, 5))
    with pytest.raises(ImportError, match="nms_rotated.*Build detectron2 from source"):
        _C.nms_rotated()
    assert _C.get_compiler_version().startswith("not compiled")


@ours
def test_installed_tree_has_no_removed_alias_and_the_py311_fixes():
    pattern = re.compile(r"\bnp\.(int|float|bool|str|object)\b(?!\w)|\bImage\.LINEAR\b")
    hits = [
        f"{p}:{i + 1}"
        for p in INSTALLED.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines())
        if pattern.search(line)
    ]
    assert hits == []
    assert "sample(sorted(self._fallback_candidates)" in (INSTALLED / "data/common.py").read_text()
    from detectron2 import model_zoo

    assert Path(model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml")).is_file()


def test_removed_aliases_fail_here_so_the_train_and_eval_paths_do_not_use_them(synthetic_splits):
    """numpy >= 1.24 and Pillow >= 10 raise on the removed aliases: one training step and an
    evaluation through detectron2's mapper, transforms and COCOEvaluator prove they are unused."""
    for alias in ("int", "float", "str", "object"):  # np.bool is numpy 2's name of np.bool_
        with pytest.raises(AttributeError), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "np.str will be defined ..."
            getattr(np, alias)
    with pytest.raises(AttributeError):
        PIL.Image.LINEAR
    from detectron2.config import instantiate
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import inference_on_dataset
    from detectron2.utils.events import EventStorage

    from focus_detr.data import get_detection_dataset_dicts
    from focus_detr.engine import DetrTrainer, get_config
    from toy_model import ToyDetector

    cfg = get_config("common/data/synthetic.py").dataloader
    cfg.train.total_batch_size, cfg.train.num_workers = 2, 0
    model = ToyDetector()
    trainer = DetrTrainer(
        model,
        instantiate(cfg.train),
        torch.optim.AdamW(model.parameters(), lr=1e-3),
        clip_grad_params={"max_norm": 0.1},
    )
    with EventStorage(0):
        trainer.iter = 0
        trainer.run_step()
    test_loader = build_detection_test_loader(
        dataset=get_detection_dataset_dicts("synthetic_shapes_val", filter_empty=False)[:8],
        mapper=instantiate(cfg.test.mapper),
        num_workers=0,
    )
    evaluator = instantiate(cfg.evaluator)
    results = inference_on_dataset(model, test_loader, evaluator)
    assert set(results["bbox"]) >= {"AP", "AP50", "APs", "APm", "APl"}


def _cached_sdist():
    cache = Path(
        os.environ.get(
            "FOCUS_DETR_CACHE",
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "focus_detr",
        )
    )
    return cache / "detectron2" / inst.SDIST_FILE


@pytest.mark.skipif(not _cached_sdist().is_file(), reason="sdist not in the installer's cache")
def test_patching_the_real_sdist_gives_an_importable_package(tmp_path):
    """The whole patch set on the released sdist (offline, from the cache), imported from source."""
    inst.extract_sdist(_cached_sdist(), tmp_path)
    src = tmp_path / f"{inst.SDIST_NAME}-{inst.SDIST_VERSION}"
    assert inst.patch_tree(src) > 10
    assert (
        f"patch level: {inst.PATCH_LEVEL}" in (src / "detectron2" / inst.PATCH_MARKER).read_text()
    )
    env = subprocess_env()
    env["PYTHONPATH"] = str(src)  # this tree, not the installed detectron2
    proc = subprocess.run(
        [sys.executable, "-c", inst.VERIFY], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"OK at {src / 'detectron2' / '__init__.py'}" in proc.stdout
