"""Keep freed memory in the process so that large CPU tensors are not page-faulted in again.

PyTorch allocates CPU tensors with the C library's `malloc`. glibc serves a request above its
mmap threshold (128 KiB at start, raised dynamically up to 32 MiB) with a fresh `mmap` and returns
it to the system on `free`, and it gives the top of the heap back once more than the trim
threshold is free. Detection inference allocates and frees tensors of tens of MB per layer (a
(20k, 256) float32 map is 20 MiB), so every such tensor is zero-filled page by page by the kernel on
first touch: ~45k page faults per Focus-DETR-R50 inference at 800x1216, 0.3-0.5 s on a 2-core
virtual machine where a fault is expensive. With a 32 MiB mmap threshold and no trimming, the
freed memory is reused and the faults vanish after the first inference (README "Cost").

This is what a caching allocator (jemalloc or tcmalloc through `LD_PRELOAD`, as Intel recommends
for PyTorch CPU inference) gives; `mallopt` does it from inside the process. The cost: the
process keeps its peak heap instead of returning memory to the system between inferences.
The tools apply it through `configure_allocator` ($FOCUS_DETR_MALLOC=system keeps glibc's
defaults, e.g. to measure the difference).
"""

import ctypes
import ctypes.util
import os
import sys
from typing import Optional

__all__ = [
    "ALLOCATOR_ENV_VAR",
    "ALLOCATOR_SETTINGS",
    "GLIBC_MAX_MMAP_THRESHOLD",
    "configure_allocator",
    "retain_freed_memory",
]

ALLOCATOR_ENV_VAR = "FOCUS_DETR_MALLOC"
ALLOCATOR_SETTINGS = ("retain", "system")

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
# the largest mmap threshold glibc accepts on 64-bit systems (HEAP_MAX_SIZE / 2)
GLIBC_MAX_MMAP_THRESHOLD = 32 * 1024 * 1024
_INT_MAX = 2**31 - 1


def _glibc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # musl and other C libraries have no mallopt with these semantics
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def retain_freed_memory(
    mmap_threshold: int = GLIBC_MAX_MMAP_THRESHOLD,
    trim_threshold: int = _INT_MAX,
    top_pad: int = 64 * 1024 * 1024,
) -> bool:
    """Set glibc's malloc to serve blocks up to `mmap_threshold` bytes from its heap and to keep
    freed heap memory (module docstring). Process-wide; call once, before the heavy work.

    Args:
        mmap_threshold: blocks at least this large are still mmapped (and faulted in on every
            use). At most `GLIBC_MAX_MMAP_THRESHOLD` (glibc refuses more on 64-bit).
        trim_threshold: free memory at the top of the heap kept before giving it back.
        top_pad: extra bytes requested from the system each time the heap grows.
    Returns:
        True when glibc took the settings; False elsewhere (another C library or OS: nothing
        changed).
    Raises:
        ValueError: a setting out of glibc's range.
    """
    if not 0 < mmap_threshold <= GLIBC_MAX_MMAP_THRESHOLD:
        raise ValueError(
            f"mmap_threshold must be in (0, {GLIBC_MAX_MMAP_THRESHOLD}] bytes "
            f"(glibc's limit on 64-bit), got {mmap_threshold}"
        )
    for name, value in (("trim_threshold", trim_threshold), ("top_pad", top_pad)):
        if not 0 <= value <= _INT_MAX:
            raise ValueError(f"{name} must be in [0, {_INT_MAX}] bytes, got {value}")
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; setting the mmap threshold also fixes it (no dynamic change)
    ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    ok &= libc.mallopt(_M_TOP_PAD, top_pad) == 1
    return bool(ok)


def configure_allocator(setting: Optional[str] = None) -> str:
    """Apply an allocator setting for this process: "retain" (`retain_freed_memory`) or
    "system" (leave the C library's defaults); None reads $FOCUS_DETR_MALLOC, default "retain".

    Returns:
        What is in force, for logs: "retain", "system", or "system (no glibc)" where retaining
        is not available.
    Raises:
        ValueError: an unknown setting (naming where it came from).
    """
    source = "setting"
    if setting is None:
        setting, source = os.environ.get(ALLOCATOR_ENV_VAR, "retain"), f"${ALLOCATOR_ENV_VAR}"
    if setting not in ALLOCATOR_SETTINGS:
        raise ValueError(f"{source} must be one of {ALLOCATOR_SETTINGS}, got {setting!r}")
    if setting == "system":
        return "system"
    return "retain" if retain_freed_memory() else "system (no glibc)"
