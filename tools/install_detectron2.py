#!/usr/bin/env python
"""Install detectron2 0.6's Python code without its C++ extension.

detectron2 publishes no wheels, and the PyPI source distribution ``pb1-detectron2==0.6`` (the
released v0.6 Python code) ships without the C++ sources its ``setup.py`` tries to compile, so a
plain ``pip install`` fails. This script:

1. does nothing when ``import detectron2`` already works (a user's own build is kept), unless
   it is an older patch level of this script's own build, which is upgraded;
2. downloads the sdist once into a cache directory and checks its SHA-256;
3. patches an extracted copy:
   - distribution name ``detectron2``, no extension modules;
   - ``detectron2/_C.py``: a stub module whose compiled ops raise an ``ImportError`` naming the op
     only when one is called (importing ``detectron2._C`` itself succeeds, as four of its modules
     do at import time);
   - aliases removed from current Pillow / numpy (``Image.LINEAR``, ``np.int``, ``np.bool``,
     ``np.float``, ``np.str``, ``np.object``);
   - the ``black==21.4b2`` pin (no longer installable) relaxed, caffe2-only requirements dropped;
   - Python >= 3.11 / setuptools >= 81 fixes: ``random.sample`` of a set in ``MapDataset`` (the
     retry path taken when a mapper skips a sample), ``pkg_resources`` in ``model_zoo``;
4. builds a wheel of it plus wheels of all its requirements into a wheelhouse in the cache, and
   installs from that wheelhouse only, so that re-running works offline;
5. verifies the installed package; on any failure it uninstalls what it installed and exits with
   a non-zero status (no half-installed detectron2).

Usage: ``python tools/install_detectron2.py [--cache-dir DIR] [--force]``, run with the Python of
the environment to install into. Standard library only.
"""

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILE = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
PATCH_MARKER = "_focus_detr_patched.txt"
# Bump whenever the patches change: the cached wheel is rebuilt and an installed older patch
# level of our own build is upgraded. 1: no _C, aliases; 2: Python 3.11 / setuptools fixes;
# 3: model zoo configs packaged.
PATCH_LEVEL = 3

# (pattern, replacement) applied to every .py file of the package. `\b` plus the negative
# lookahead keeps np.int64 / np.float32 / np.bool_ / np.str_ untouched.
ALIAS_FIXES = [
    (re.compile(r"\bnp\.(int|float|bool|str|object)\b(?![\w])"), r"\1"),
    (re.compile(r"\bImage\.LINEAR\b"), "Image.BILINEAR"),
]

# Exact-text source fixes: (file, old, new). Each must match once, or the sdist is unexpected.
SOURCE_FIXES = [
    # random.sample() refuses sets since Python 3.11 (the TypeError would replace the retry)
    (
        "detectron2/data/common.py",
        "cur_idx = self._rng.sample(self._fallback_candidates, k=1)[0]",
        "cur_idx = self._rng.sample(sorted(self._fallback_candidates), k=1)[0]",
    ),
    # pkg_resources is gone from setuptools >= 81
    ("detectron2/model_zoo/model_zoo.py", "import pkg_resources\n", "import importlib.resources\n"),
    (
        "detectron2/model_zoo/model_zoo.py",
        'cfg_file = pkg_resources.resource_filename(\n        "detectron2.model_zoo", '
        'os.path.join("configs", config_path)\n    )',
        'cfg_file = str(importlib.resources.files("detectron2.model_zoo") / "configs" / '
        "config_path)",
    ),
]

C_STUB = '''"""Stand-in for detectron2's compiled extension, which this build does not include.

Installed by focus_detr's tools/install_detectron2.py. Importing this module works (detectron2
imports it at module level in several files); calling any compiled op raises an ImportError that
names the op. Nothing in Focus-DETR, DINO or Sparse DETR needs these ops.
"""

_OPS_HELP = (
    "detectron2 was installed without its C++/CUDA extension (pb1-detectron2 0.6 ships no C++ "
    "sources), so the compiled op detectron2._C.{name} is not available. Build detectron2 from "
    "source (https://detectron2.readthedocs.io/en/latest/tutorials/install.html) to use it."
)


def get_compiler_version():
    return "not compiled (pure-Python detectron2 build)"


def get_cuda_version():
    return "not compiled"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def _missing_op(*args, **kwargs):
        raise ImportError(_OPS_HELP.format(name=name))

    _missing_op.__name__ = name
    return _missing_op
'''


def log(msg):
    print(f"[install_detectron2] {msg}", flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def existing_detectron2():
    """(version, path, patch level) of an importable detectron2 in this interpreter, or None.

    The patch level is None for a detectron2 that this script did not install.
    """
    probe = (
        "import detectron2, os; print(detectron2.__version__); "
        "print(os.path.dirname(detectron2.__file__))"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if res.returncode != 0:
        return None
    version, path = res.stdout.strip().splitlines()[-2:]
    return version, path, read_patch_level(Path(path))


def read_patch_level(pkg_dir):
    """Patch level recorded in an installed package by this script, or None if not ours."""
    marker = Path(pkg_dir) / PATCH_MARKER
    if not marker.is_file():
        return None
    m = re.search(r"patch level: (\d+)", marker.read_text())
    return int(m.group(1)) if m else 1  # level 1 wrote no number


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract_sdist(sdist: Path, dest) -> None:
    """Unpack the sdist into `dest`, refusing members that would land outside it or are links.

    tarfile's "data" filter does exactly that, but only from Python 3.12 (and the 3.9.17 /
    3.10.12 / 3.11.4 backports); older patch releases, which setup.py allows, get the same
    checks here.
    """
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        root = Path(dest).resolve()
        for member in tar.getmembers():
            target = (root / member.name).resolve()
            if not (member.isfile() or member.isdir()) or (
                target != root and root not in target.parents
            ):
                raise RuntimeError(
                    f"refusing to extract {member.name!r} from {sdist}: "
                    f"not a plain file or directory inside {root}"
                )
        tar.extractall(dest)


def fetch_sdist(cache):
    """The verified sdist path, downloaded with pip (respecting pip's config) when not cached."""
    sdist = cache / SDIST_FILE
    if not sdist.exists():
        # --no-deps --no-binary: the raw sdist; --no-build-isolation: its setup.py imports torch,
        # which must come from this environment (pip reads the sdist's metadata on download).
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--no-build-isolation",
                "-d",
                cache,
                f"{SDIST_NAME}=={SDIST_VERSION}",
            ]
        )
    digest = sha256(sdist)
    if digest != SDIST_SHA256:
        sdist.unlink()
        raise RuntimeError(
            f"{sdist}: SHA-256 {digest} does not match the expected "
            f"{SDIST_SHA256}; the corrupt file was removed, run again"
        )
    return sdist


def patch_setup_py(text):
    """Rename the distribution, drop the extension build and the requirements that cannot be met."""
    replacements = [
        ('name="pb1-detectron2"', 'name="detectron2"'),
        ("ext_modules=get_extensions(),", "ext_modules=[],"),
        ('cmdclass={"build_ext": torch.utils.cpp_extension.BuildExtension},', ""),
        ('"black==21.4b2",', '"black",'),  # 21.4b2 is gone from PyPI and breaks on click>=8.1
        ('"future",  # used by caffe2', ""),
        ('"pydot",  # used to save caffe2 SVGs', ""),
    ]
    for old, new in replacements:
        if old not in text:
            raise RuntimeError(
                f"setup.py of {SDIST_FILE} does not contain {old!r}; "
                "the sdist is not the expected release"
            )
        text = text.replace(old, new)
    return text


def fix_aliases(text):
    """`text` with removed numpy/Pillow aliases replaced; returns (new text, number of fixes)."""
    n_fixes = 0
    for pattern, repl in ALIAS_FIXES:
        text, n = pattern.subn(repl, text)
        n_fixes += n
    return text, n_fixes


def apply_source_fixes(src):
    """Apply `SOURCE_FIXES` under `src`; an old text not found exactly once is an error."""
    for rel, old, new in SOURCE_FIXES:
        path = src / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise RuntimeError(
                f"{rel} of {SDIST_FILE} does not contain {old!r} exactly once; "
                "the sdist is not the expected release"
            )
        path.write_text(text.replace(old, new))


def patch_tree(src):
    """Apply every patch to the extracted sdist at `src`; returns the number of alias fixes."""
    setup_py = src / "setup.py"
    setup_py.write_text(patch_setup_py(setup_py.read_text()))
    pkg = src / "detectron2"
    (pkg / "_C.py").write_text(C_STUB)
    (pkg / PATCH_MARKER).write_text(
        "Patched by focus_detr tools/install_detectron2.py: no C++ extension, removed numpy/"
        f"Pillow aliases replaced, Python 3.11 fixes.\npatch level: {PATCH_LEVEL}\n"
    )
    apply_source_fixes(src)
    n_fixes = 0
    for py in pkg.rglob("*.py"):
        text = py.read_text()
        new, n = fix_aliases(text)
        n_fixes += n
        if new != text:
            py.write_text(new)
    # package_data must include the marker so that the installed tree carries it
    text = setup_py.read_text()
    # the sdist has the model zoo configs inside the package already; get_model_zoo_configs()
    # looks for them at the top level and finds none
    old = 'package_data={"detectron2.model_zoo": get_model_zoo_configs()},'
    if old not in text:
        raise RuntimeError(f"setup.py of {SDIST_FILE} does not contain {old!r}")
    text = text.replace(
        old,
        'package_data={"detectron2.model_zoo": ["configs/**/*.yaml", '
        f'"configs/**/*.py"], "detectron2": ["{PATCH_MARKER}"]}},',
    )
    setup_py.write_text(text)
    return n_fixes


VERIFY = r"""
import importlib, sys
import detectron2
from detectron2 import _C
import detectron2.data, detectron2.engine, detectron2.evaluation, detectron2.modeling
import detectron2.config, detectron2.checkpoint, detectron2.solver, detectron2.utils.collect_env
try:
    _C.deform_conv_forward()
except ImportError as e:
    assert "deform_conv_forward" in str(e), e
else:
    raise AssertionError("compiled-op stub did not raise")
import detectron2.model_zoo  # imported pkg_resources before the fix
assert detectron2.model_zoo.get_config_file("common/train.py").endswith("train.py")
print("detectron2", detectron2.__version__, "OK at", detectron2.__file__)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "focus_detr"
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(os.environ.get("FOCUS_DETR_CACHE", default_cache))
    )
    parser.add_argument(
        "--force", action="store_true", help="install even when an importable detectron2 exists"
    )
    args = parser.parse_args(argv)

    found = existing_detectron2()
    upgrade = False
    if found and not args.force:
        version, path, level = found
        if level is None:
            log(f"detectron2 {version} is already importable at {path}; leaving it as it is")
            return 0
        if level >= PATCH_LEVEL:
            log(f"detectron2 {version} (patch level {level}) is already installed at {path}")
            return 0
        log(f"upgrading our detectron2 build at {path} from patch level {level} to {PATCH_LEVEL}")
        upgrade = True

    cache = args.cache_dir / "detectron2"
    wheelhouse = cache / "wheelhouse"
    cache.mkdir(parents=True, exist_ok=True)
    own_wheel = wheelhouse / "detectron2-0.6-py3-none-any.whl"
    level_file = wheelhouse / "detectron2-patch-level.txt"
    cached_level = level_file.read_text().strip() if level_file.is_file() else ""
    if not own_wheel.exists() or cached_level != str(PATCH_LEVEL):
        if own_wheel.exists():
            own_wheel.unlink()  # built by an older patch level
        sdist = fetch_sdist(cache)
        with tempfile.TemporaryDirectory() as tmp:
            extract_sdist(sdist, tmp)
            src = Path(tmp) / f"{SDIST_NAME}-{SDIST_VERSION}"
            n = patch_tree(src)
            log(f"patched {src}: {n} removed numpy/Pillow aliases replaced")
            # One pip call builds our wheel and collects wheels of every requirement, so the
            # install below (and any later one) needs no index.
            wheelhouse.mkdir(exist_ok=True)
            run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--no-build-isolation",
                    "-w",
                    wheelhouse,
                    src,
                ]
            )
        level_file.write_text(f"{PATCH_LEVEL}\n")
    reinstall = ["--force-reinstall", "--no-deps"] if (upgrade or args.force) else []
    try:
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-index",
                "--find-links",
                wheelhouse,
                *reinstall,
                own_wheel,
            ]
        )
        run([sys.executable, "-c", VERIFY])
    except subprocess.CalledProcessError as e:
        log(f"FAILED ({e}); removing the partial installation")
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "detectron2"])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
