"""The Triton backend under Triton's CPU interpreter (and natively when a GPU is present).

TRITON_INTERPRET=1 must be set before triton is imported, so the checks (msda_triton_cases.py)
run in a fresh interpreter process; this test reports their result.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
CASES = HERE / "msda_triton_cases.py"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed"
)


def _run_cases(env_extra):
    env = dict(os.environ, **env_extra)
    env.pop("FOCUS_DETR_MSDA_BACKEND", None)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(CASES),
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-rs",
        ],
        cwd=HERE.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, report


def test_triton_kernels_under_interpreter():
    _run_cases({"TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_kernels_on_gpu():
    _run_cases({"TRITON_INTERPRET": "0"})


def _compile(kernel, dtype, head_dim, block_q, capability):
    """Ahead-of-time compile for an NVIDIA target; needs no GPU (triton ships ptxas)."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    block_d = triton.next_power_of_2(head_dim)
    grad_value = "fp32" if dtype == "bf16" else dtype
    pointers = iter(
        [
            f"*{dtype}",
            "*i64",
            "*i64",
            f"*{dtype}",
            f"*{dtype}",
            f"*{dtype}",
            f"*{grad_value}",
            f"*{dtype}",
            f"*{dtype}",
        ]
    )
    constants = {
        "M": 8,
        "L": 4,
        "P": 4,
        "BLOCK_Q": block_q,
        "BLOCK_D": block_d,
        "EVEN_D": block_d == head_dim,
        "ACC": tl.float32,
    }
    signature, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name.endswith("_ptr"):
            signature[name] = next(pointers)
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "constexpr" if name in constants else "i32"
    source = ASTSource(
        fn=kernel,
        signature=signature,
        attrs=attrs,
        constexprs={(kernel.arg_names.index(k),): v for k, v in constants.items()},
    )
    return triton.compile(
        source, target=GPUTarget("cuda", capability, 32), options={"num_warps": 4}
    )


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="needs the compiler")
@pytest.mark.parametrize("dtype,head_dim,capability", [("fp32", 32, 90), ("bf16", 30, 80)])
def test_kernels_compile_for_gpu(dtype, head_dim, capability):
    """The interpreter does not enforce compile-time rules (constexpr arguments, types): compile
    both kernels for real GPU targets to catch what it lets through."""
    from focus_detr.layers.ms_deform_attn import triton_kernels

    for kernel, block_q in (
        (triton_kernels.msda_fwd_kernel, 64),
        (triton_kernels.msda_bwd_kernel, 32),
    ):
        compiled = _compile(kernel, dtype, head_dim, block_q, capability)
        assert ".entry " + kernel.fn.__name__ in compiled.asm["ptx"]
