"""The compute floor of tools/benchmark_export.py: the measured matrix-product rate and the
ratio of a time to the floor."""
import pytest

from focus_detr.deploy.timing import compute_floor_ratio, matmul_rate


def test_matmul_rate_is_multiply_adds_per_second(monkeypatch):
    """A product that takes 0.5 s per call on 64x64 matrices: 64**3 / 0.5 multiply-adds/s."""
    clock = iter([0.0, 0.5] * 3)
    monkeypatch.setattr("focus_detr.deploy.timing.time.perf_counter", lambda: next(clock))
    assert matmul_rate(64, rounds=3) == pytest.approx(64 ** 3 / 0.5)


def test_compute_floor_ratio():
    # 10 GMAC at 5 GMAC/s: floor 2 s; 6 s is 3x the floor
    assert compute_floor_ratio(6.0, 10e9, 5e9) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="must be > 0"):
        compute_floor_ratio(1.0, 0, 1e9)
