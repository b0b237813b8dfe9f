"""Eager PyTorch and exported runtimes timed side by side on the same image, in interleaved
rounds (each round runs every runtime once), so that machine load drifts hit all of them alike."""
import statistics
import time
from typing import Callable, Dict

__all__ = ["interleaved_timings"]


def interleaved_timings(runners: Dict[str, Callable[[], object]], rounds: int = 5,
                        warmup: int = 1) -> Dict[str, Dict[str, float]]:
    """Median and minimum seconds per call of each runner.

    Args:
        runners: name -> zero-argument callable (one inference).
        rounds: timed rounds; warmup: untimed rounds first.
    Returns:
        name -> {"median_s", "min_s"}.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for _ in range(warmup):
        for run in runners.values():
            run()
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "min_s": min(t)} for name, t in times.items()}
