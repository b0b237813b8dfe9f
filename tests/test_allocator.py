"""Allocator setting of the tools: freed memory is reused instead of page-faulted in again."""

import subprocess
import sys
import textwrap

import pytest

from focus_detr.engine import allocator
from focus_detr.engine.allocator import (
    ALLOCATOR_ENV_VAR,
    GLIBC_MAX_MMAP_THRESHOLD,
    configure_allocator,
    retain_freed_memory,
)

# A detector-like pattern: several 20 MiB maps (a (20k, 256) float32 token map each) alive at
# once, all freed at the end of the step (an inference); prints the minor page faults per step
# after warm-up and the bytes a step allocates. With glibc's defaults the freed top of the heap
# (more than twice the dynamic mmap threshold) is given back to the system and faulted in again
# at every step.
_FAULTS_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    from focus_detr.engine.allocator import configure_allocator
    print(configure_allocator(sys.argv[1]))
    def step():
        maps = [torch.ones(20000, 256) for _ in range(6)]
        return sum(m.nbytes for m in maps)
    step(); step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        allocated = step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(faults / 5, allocated)
    """
)


needs_glibc = pytest.mark.skipif(allocator._glibc() is None, reason="needs glibc's malloc")


@pytest.fixture(scope="module")
def retained_faults_per_step():
    """(setting in force, page faults per step, bytes a step allocates) under "retain"."""
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT, "retain"], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    faults, allocated = out[1].split()
    return out[0], float(faults), int(allocated)


@needs_glibc
def test_retained_memory_is_reused_without_page_faults(retained_faults_per_step):
    in_force, faults, allocated = retained_faults_per_step
    assert in_force == "retain"
    pages = allocated / 4096
    assert pages > 20000  # the step does allocate tens of MB
    # with glibc's defaults most of these pages are faulted in at every step (a fresh mmap per
    # tensor above the dynamic threshold, or the heap top trimmed); retained, almost none
    assert faults < 0.1 * pages, (faults, pages)


class _RecordingMallopt:
    """Stands in for glibc's mallopt: records the calls instead of changing this process's
    malloc."""

    def __init__(self):
        self.calls = []

    def __call__(self, param, value):
        self.calls.append((param, value))
        return 1


class _RecordingLibc:
    def __init__(self):
        self.mallopt = _RecordingMallopt()


def test_system_setting_keeps_the_defaults(monkeypatch):
    # What glibc's defaults then do depends on the heap's layout (on some runs its dynamic
    # thresholds avoid the faults, on most they do not), so the claim tested is the one the
    # setting makes: malloc's parameters are left alone.
    libc = _RecordingLibc()
    monkeypatch.setattr(allocator, "_glibc", lambda: libc)
    assert configure_allocator("system") == "system"
    assert libc.mallopt.calls == []
    assert configure_allocator("retain") == "retain"
    assert libc.mallopt.calls == [
        (allocator._M_MMAP_THRESHOLD, GLIBC_MAX_MMAP_THRESHOLD),
        (allocator._M_TRIM_THRESHOLD, 2**31 - 1),
        (allocator._M_TOP_PAD, 64 * 1024 * 1024),
    ]


def test_configure_allocator_reads_the_environment(monkeypatch):
    monkeypatch.setenv(ALLOCATOR_ENV_VAR, "system")
    assert configure_allocator() == "system"
    monkeypatch.setenv(ALLOCATOR_ENV_VAR, "jemalloc")
    with pytest.raises(ValueError, match=r"\$FOCUS_DETR_MALLOC must be one of .*'jemalloc'"):
        configure_allocator()
    with pytest.raises(ValueError, match="setting must be one of"):
        configure_allocator("fast")


def test_retain_freed_memory_refuses_out_of_range_settings():
    with pytest.raises(ValueError, match="mmap_threshold must be in"):
        retain_freed_memory(mmap_threshold=GLIBC_MAX_MMAP_THRESHOLD + 1)
    with pytest.raises(ValueError, match="mmap_threshold must be in"):
        retain_freed_memory(mmap_threshold=0)
    with pytest.raises(ValueError, match="trim_threshold must be in"):
        retain_freed_memory(trim_threshold=-1)
    with pytest.raises(ValueError, match="top_pad must be in"):
        retain_freed_memory(top_pad=2**31)


def test_retain_freed_memory_without_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert retain_freed_memory() is False
    assert configure_allocator("retain") == "system (no glibc)"
