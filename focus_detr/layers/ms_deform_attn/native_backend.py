"""`native` backend: this package's own CPU kernels (`csrc/ms_deform_attn_cpu.cpp`).

Compiled on first use with `torch.utils.cpp_extension` (a C++ compiler and ninja are needed; about
30 s once, then cached under ~/.cache/torch_extensions or $TORCH_EXTENSIONS_DIR), with the vector
instructions torch itself dispatches to on this CPU (AVX-512, AVX2 or none), so a
build never uses instructions the machine lacks. Float32 and float64 forward and backward; the
forward also reads bfloat16 or float16 values with float32 locations and weights (reduced-precision
inference reads half the bytes and skips the cast). Forward: one query per step, parallel over the
queries, the head's channels accumulated contiguously; 2-3x faster than `ext` on CPU
(tools/benchmark_msda.py). Backward: parallel over (image, head), no atomics, deterministic.

The build is keyed by a hash of the source, the flags, torch and Python: its name and folder carry
the hash and it compiles a copy of the source kept in that folder, so every checkout (and every
venv with the same torch) of the same source shares one build, and one with another source or
torch builds its own beside it instead of rebuilding a shared one on every switch.
"""

import functools
import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional

import torch

__all__ = [
    "SOURCE",
    "REDUCED_VALUE_DTYPES",
    "BuildSpec",
    "build_spec",
    "build_lock_held",
    "unavailable_reason",
    "forward",
    "backward",
]

SOURCE = Path(__file__).with_name("csrc") / "ms_deform_attn_cpu.cpp"
# value dtypes the forward reads as they are next to float32/float64 locations
REDUCED_VALUE_DTYPES = (torch.bfloat16, torch.float16)
_COMPUTE_DTYPES = (torch.float32, torch.float64)
# compiler flags per `torch.backends.cpu.get_cpu_capability()`: what torch's own kernels use here
_ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}
_logger = logging.getLogger(__name__)


def _ensure_ninja():
    """torch's JIT build runs `ninja` from PATH; a pip-installed ninja lives beside Python."""
    if shutil.which("ninja"):
        return
    try:
        import ninja  # the PyPI package
    except ImportError:
        return  # the build will say that ninja is missing
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


class BuildSpec(NamedTuple):
    """Where and under which name the kernel is built."""

    name: str
    directory: Path
    source: Path  # the copy compiled (inside `directory`)
    flags: List[str]


def build_spec(source: Path = SOURCE, capability: Optional[str] = None) -> BuildSpec:
    """The build of `source` for this CPU capability, keyed by a hash of the source's content,
    the flags, torch's version and Python's (never by the checkout's path)."""
    capability = capability or torch.backends.cpu.get_cpu_capability()
    flags = ["-O3", "-fopenmp"] + _ISA_FLAGS.get(capability, [])
    key = hashlib.sha256()
    for part in (
        Path(source).read_bytes(),
        " ".join(flags).encode(),
        torch.__version__.encode(),
        sys.version.encode(),
    ):
        key.update(part + b"\0")
    name = f"focus_detr_msda_cpu_{capability.lower()}_{key.hexdigest()[:12]}"
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    directory = Path(root) / name
    return BuildSpec(name, directory, directory / Path(source).name, flags)


def _prepare(spec: BuildSpec, source: Path = SOURCE) -> None:
    """The build folder with its copy of the source (written atomically, once); a log line when
    another process holds the build lock (torch's build waits on it silently)."""
    spec.directory.mkdir(parents=True, exist_ok=True)
    if not spec.source.is_file() or spec.source.read_bytes() != Path(source).read_bytes():
        partial = spec.source.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(source, partial)
        os.replace(partial, spec.source)
    lock = spec.directory / "lock"
    if build_lock_held(lock):
        _logger.warning(
            "waiting for another process's build of the native deformable-attention "
            f"kernel (it holds {lock})"
        )


def build_lock_held(lock: Path) -> bool:
    """Whether another process holds torch's build lock `lock` (an OS advisory lock on the file,
    as torch's cpp_extension takes it); False where that cannot be told."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return False
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


@functools.lru_cache(maxsize=None)
def _load():
    """(compiled module, None), or (None, why it could not be built)."""
    spec = build_spec()
    _ensure_ninja()
    _logger.info("loading the native deformable-attention CPU kernel (built on first use, ~30 s)")
    # torch warns at import that no CUDA runtime is found: irrelevant to a CPU-only build
    torch_logger = logging.getLogger("torch.utils.cpp_extension")
    level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension

        _prepare(spec)
        module = cpp_extension.load(
            name=spec.name,
            sources=[str(spec.source)],
            extra_cflags=spec.flags,
            extra_ldflags=["-fopenmp"],
            build_directory=str(spec.directory),
            verbose=False,
        )
    except Exception as e:  # no compiler or ninja, a failed compilation
        message = str(e).strip().splitlines()
        return None, (
            f"its C++ kernel ({SOURCE.name}) did not build: {type(e).__name__}: "
            f"{message[0] if message else ''} (needs a C++ compiler and ninja)"
        )
    finally:
        torch_logger.setLevel(level)
    return module, None


def unavailable_reason(device: torch.device, dtype: Optional[torch.dtype] = None) -> Optional[str]:
    """None when the backend can run tensors of `device`/`dtype`, else why not."""
    if device.type != "cpu":
        return f"the native kernels run on CPU only, not {device.type}"
    _, reason = _load()
    return reason


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in _COMPUTE_DTYPES else torch.float32


def _module():
    """The compiled kernels (built on first use); an error saying why when they cannot be."""
    module, reason = _load()
    if module is None:
        raise RuntimeError(reason)
    return module


def forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Output in the locations' dtype; `value` may be bfloat16/float16 beside float32 locations."""
    dtype = sampling_locations.dtype
    compute = _compute_dtype(dtype)
    if value.dtype not in REDUCED_VALUE_DTYPES:
        value = value.to(compute)
    out = _module().forward(
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations.to(compute),
        attention_weights.to(compute),
    )
    return out.to(dtype)


def backward(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output
):
    compute = _compute_dtype(sampling_locations.dtype)
    grads = _module().backward(
        value.to(compute),
        spatial_shapes,
        level_start_index,
        sampling_locations.to(compute),
        attention_weights.to(compute),
        grad_output.to(compute).contiguous(),
    )
    return tuple(
        g.to(t.dtype) for g, t in zip(grads, (value, sampling_locations, attention_weights))
    )
