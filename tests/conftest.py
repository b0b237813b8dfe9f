"""Shared test helpers: the repository root, running tools/train_net.py, the built-in dataset."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# One intra-op thread for every test, whichever files are selected: the suite runs on 2 shared
# cores, mostly small ops and child processes, where a second thread spins more than it computes
# (the tiny DINO's learning test took > 900 s on 2 threads, ~210 s on one). A test that wants
# more sets it in a fixture and restores it (test_focus_fixture_equivalence).
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
TOY_CONFIG = REPO_ROOT / "tests" / "toy_config.py"


def subprocess_env(**extra):
    """Environment for child Pythons: this checkout first on the path, one thread per process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_train_net(*args, nproc=1, timeout=600, check=True, master_port=None, script=None):
    """Run tools/train_net.py (under torchrun when nproc > 1); returns the CompletedProcess.

    stdout and stderr are merged into `.stdout`; with `check`, a non-zero exit fails the test
    and shows the output's tail. `script` runs another script with the same set-up.
    """
    script = str(script or REPO_ROOT / "tools" / "train_net.py")
    if nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            "--master-port",
            str(master_port or _free_port()),
            script,
        ]
    else:
        cmd = [sys.executable, script]
    proc = subprocess.run(
        cmd + [str(a) for a in args],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"train_net.py {' '.join(map(str, args))} exited with {proc.returncode}:\n"
            f"{proc.stdout[-6000:]}"
        )
    return proc


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _restore_process_settings():
    """The tools' `main` sets the thread count and the attention backend ($FOCUS_DETR_MSDA_BACKEND)
    for their process; called in-process by a test, they must not leak into the next tests."""
    from focus_detr.layers.ms_deform_attn.backends import ENV_VAR

    threads, backend = torch.get_num_threads(), os.environ.get(ENV_VAR)
    yield
    torch.set_num_threads(threads)
    if backend is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = backend


@pytest.fixture(scope="session")
def synthetic_splits():
    """{"train": dir, "val": dir} of the built-in dataset (generated on first use, cached)."""
    from focus_detr.data import prepare_synthetic_split

    return {s: prepare_synthetic_split(s) for s in ("train", "val")}
