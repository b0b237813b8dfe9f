"""The native kernel's build is keyed by its source's content, flags and torch, not by the
checkout's path, so clones of one source share one build; a held build lock is logged."""

import logging
import shutil

import pytest
import torch
from filelock import FileLock

from focus_detr.layers.ms_deform_attn import native_backend
from focus_detr.layers.ms_deform_attn.native_backend import SOURCE, build_lock_held, build_spec


def test_two_checkouts_of_one_source_share_one_build(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    copies = []
    for clone in ("clone_a", "clone_b"):
        (tmp_path / clone).mkdir()
        copies.append(shutil.copy(SOURCE, tmp_path / clone / SOURCE.name))
    a, b = (build_spec(c, "AVX2") for c in copies)
    assert a == b and a.directory.parent == tmp_path / "cache"
    assert a.source.parent == a.directory  # compiled from the build folder's own copy
    with open(copies[1], "a") as f:
        f.write("\n// another version\n")
    changed = build_spec(copies[1], "AVX2")
    assert changed.name != a.name and changed.directory != a.directory
    assert build_spec(copies[0], "AVX512").name != a.name  # other flags


def test_a_held_build_lock_is_seen_and_logged(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    spec = build_spec()
    spec.directory.mkdir(parents=True)
    lock = spec.directory / "lock"
    assert not build_lock_held(lock)
    with FileLock(str(lock)):  # what torch's cpp_extension holds while it builds
        assert build_lock_held(lock)
        with caplog.at_level(logging.WARNING, logger=native_backend.__name__):
            native_backend._prepare(spec)
        assert "waiting for another process's build" in caplog.text
    assert not build_lock_held(lock)  # the file stays; the lock is gone
    assert spec.source.read_bytes() == SOURCE.read_bytes()


def test_the_loaded_kernel_comes_from_its_keyed_build():
    module, reason = native_backend._load()
    if module is None:
        pytest.skip(reason)
    assert module.__file__.startswith(str(build_spec().directory))
    assert torch.backends.cpu.get_cpu_capability().lower() in build_spec().name
