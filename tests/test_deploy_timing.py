"""The compute floor of tools/benchmark_export.py: the measured matrix-product rate and the
ratio of a time to the floor."""

import pytest

from focus_detr.deploy.timing import compute_floor_ratio, matmul_rate


def test_matmul_rate_is_multiply_adds_per_second(monkeypatch):
    """A product that takes 0.5 s per call on 64x64 matrices: 64**3 / 0.5 multiply-adds/s."""
    clock = iter([0.0, 0.5] * 3)
    monkeypatch.setattr("focus_detr.deploy.timing.time.perf_counter", lambda: next(clock))
    assert matmul_rate(64, rounds=3) == pytest.approx(64**3 / 0.5)


def test_compute_floor_ratio():
    # 10 GMAC at 5 GMAC/s: floor 2 s; 6 s is 3x the floor
    assert compute_floor_ratio(6.0, 10e9, 5e9) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="must be > 0"):
        compute_floor_ratio(1.0, 0, 1e9)


def test_interleaved_timings_pause_before_every_timed_call():
    from focus_detr.deploy.timing import interleaved_timings

    events = []
    runners = {"a": lambda: events.append("a"), "b": lambda: events.append("b")}
    timings = interleaved_timings(
        runners, rounds=2, warmup=1, pause_s=0.25, sleep=lambda s: events.append(s)
    )
    # warm-up unpaused, then each timed call after a pause, runners interleaved
    assert events == ["a", "b", 0.25, "a", 0.25, "b", 0.25, "a", 0.25, "b"]
    assert set(timings) == {"a", "b"} and all(t["min_s"] <= t["median_s"] for t in timings.values())
    with pytest.raises(ValueError, match="pause_s must be >= 0"):
        interleaved_timings(runners, pause_s=-1)
