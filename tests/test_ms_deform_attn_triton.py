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

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed")


def _run_cases(env_extra):
    env = dict(os.environ, **env_extra)
    env.pop("FOCUS_DETR_MSDA_BACKEND", None)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider",
         "-o", "addopts=", "-rs"],
        cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=600)
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, report


def test_triton_kernels_under_interpreter():
    _run_cases({"TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_kernels_on_gpu():
    _run_cases({"TRITON_INTERPRET": "0"})
