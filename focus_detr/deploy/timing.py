"""Eager PyTorch and exported runtimes timed side by side on the same image, in interleaved
rounds (each round runs every runtime once), so that machine load drifts hit all of them alike.

Each runtime keeps its own worker threads (PyTorch's OpenMP, ONNX Runtime's pool, OpenVINO's
TBB arena), which spin for a while after a call before they sleep: on a machine with few cores, a
runtime timed right after another one shares the cores with those spinning threads (measured
here: eager Focus-DETR-R50 at 800x1216 on 2 cores took 3.2 s right after an OpenVINO call and
1.7 s alone). A pause before every timed call lets the previous runtime's threads go idle."""

import statistics
import time
from typing import Callable, Dict

import torch

__all__ = ["compute_floor_ratio", "interleaved_timings", "matmul_rate"]


def interleaved_timings(
    runners: Dict[str, Callable[[], object]],
    rounds: int = 5,
    warmup: int = 1,
    pause_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> Dict[str, Dict[str, float]]:
    """Median and minimum seconds per call of each runner.

    Args:
        runners: name -> zero-argument callable (one inference).
        rounds: timed rounds; warmup: untimed rounds first.
        pause_s: seconds slept before every timed call, so that the previous runner's worker
            threads stop spinning (module docstring). Default 0.5.
        sleep: how to pause (a stand-in in tests).
    Returns:
        name -> {"median_s", "min_s"}.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not pause_s >= 0:
        raise ValueError(f"pause_s must be >= 0 seconds, got {pause_s}")
    for _ in range(warmup):
        for run in runners.values():
            run()
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            if pause_s:
                sleep(pause_s)
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "min_s": min(t)} for name, t in times.items()}


def matmul_rate(size: int = 2048, rounds: int = 3, dtype=None) -> float:
    """The machine's matrix-product rate in multiply-adds per second (fvcore's flop convention,
    the one `focus_detr.analysis.flop_analysis` counts the model in): the fastest of `rounds`
    (size x size) @ (size x size) products in `dtype` (default float32), with torch's current
    thread count (set it to the runtimes' threads first)."""
    if size < 1 or rounds < 1:
        raise ValueError(f"size and rounds must be >= 1, got {size}, {rounds}")
    dtype = dtype or torch.float32
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(size, size, generator=g).to(dtype) for _ in range(2))
    torch.mm(a, b)  # warm-up: the kernel's first call allocates and dispatches
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return size**3 / best


def compute_floor_ratio(seconds: float, multiply_adds: float, rate: float) -> float:
    """How many times the compute floor `seconds` is: seconds / (multiply_adds / rate)."""
    if multiply_adds <= 0 or rate <= 0:
        raise ValueError(f"multiply_adds and rate must be > 0, got {multiply_adds}, {rate}")
    return seconds / (multiply_adds / rate)
