"""Eager PyTorch and the exported runtimes timed side by side on one image, at each precision
they offer, with each time's ratio to the compute floor and each runtime's detections compared
with eager float32's (tools/benchmark_export.py, tools/benchmark.py --runtimes)."""

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from ..modeling import optimize
from .compare import set_distance
from .export import ExportableDetector, export_onnx
from .precision import PRECISIONS, check_precision
from .runtime import load
from .timing import compute_floor_ratio, interleaved_timings

__all__ = [
    "RuntimeComparison",
    "compare_runtimes",
    "eager_at_precision",
    "load_exported",
    "offered_precisions",
]

# detections "agree" when every one has a same-class partner this close (score, box px)
AGREE_SCORE_TOL, AGREE_BOX_TOL = 1e-4, 1e-2


def offered_precisions(precisions: Sequence[str], runtimes: Sequence[str]) -> Dict[str, List[str]]:
    """runtime -> the requested precisions it offers (shared names); a ValueError names a
    precision that none of `runtimes` offers."""
    unknown = sorted(set(precisions) - {p for r in runtimes for p in PRECISIONS[r]})
    if unknown:
        offer = {r: PRECISIONS[r] for r in runtimes}
        raise ValueError(f"precisions {unknown} are offered by none of the runtimes {offer}")
    return {r: [check_precision(r, p) for p in precisions if p in PRECISIONS[r]] for r in runtimes}


@dataclass
class RuntimeComparison:
    """What `compare_runtimes` measured.

    Attributes:
        timings: "runtime precision" -> {"median_s", "min_s"}; "eager fp32" always present.
        distances: name -> `set_distance` of its detections from eager float32's (<= 1: every
            detection has a partner within AGREE_SCORE_TOL / AGREE_BOX_TOL).
        skipped: name -> why it did not run (e.g. a precision the CPU lacks).
    """

    timings: Dict[str, Dict[str, float]]
    distances: Dict[str, float]
    skipped: Dict[str, str] = field(default_factory=dict)

    def table(self, multiply_adds: float = None, rate: float = None) -> str:
        """One line per runtime: median and minimum seconds, the speed-up over eager float32,
        with `multiply_adds` and `rate` the ratio to the compute floor, and whether its
        detections agree with eager float32's."""
        base = self.timings["eager fp32"]["median_s"]
        lines = []
        for name, t in self.timings.items():
            line = (
                f"{name:18s} median {t['median_s']:.3f} s, min {t['min_s']:.3f} s, "
                f"speed-up {base / t['median_s']:.2f}x"
            )
            if multiply_adds and rate:
                floor = compute_floor_ratio(t["median_s"], multiply_adds, rate)
                line += f", {floor:.1f}x the float32 floor"
            if name in self.distances:
                gap = self.distances[name]
                line += (
                    f"; detections {'agree' if gap <= 1 else 'DIFFER'} (distance "
                    f"{gap:.2g} in units of {AGREE_SCORE_TOL:g} score / {AGREE_BOX_TOL:g} px)"
                )
            lines.append(line)
        lines += [f"{name:18s} skipped: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def _detections(result) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if isinstance(result, tuple):
        return result
    return result.pred_boxes.tensor, result.scores, result.pred_classes


def eager_at_precision(model: nn.Module, precision: str) -> nn.Module:
    """`model` itself for "fp32"; otherwise a copy with `optimize`'s reduced precision (norms
    folded), so the float32 model stays as it is."""
    if check_precision("eager", precision) == "fp32":
        return model
    return optimize(copy.deepcopy(model), fold_norms=True, reduced_precision=precision)


def load_exported(
    path, offered: Dict[str, List[str]], threads: int = 0, onnxruntime_providers=None
) -> Tuple[Dict[str, object], Dict[str, str]]:
    """The exported graph at `path` loaded in each runtime at each precision of `offered`
    (`offered_precisions`; its "eager" entry is left out).

    Returns:
        ("runtime precision" -> detector, "runtime precision" -> why it was skipped: the
        runtime is not installed or the device lacks the precision).
    """
    loaded, skipped = {}, {}
    for runtime, names in offered.items():
        if runtime == "eager":
            continue
        options = {}
        if runtime == "onnxruntime" and onnxruntime_providers:
            options["providers"] = list(onnxruntime_providers)
        for precision in names:
            try:
                loaded[f"{runtime} {precision}"] = load(
                    path, runtime=runtime, threads=threads, precision=precision, **options
                )
            except (ImportError, ValueError) as e:
                skipped[f"{runtime} {precision}"] = str(e)
    return loaded, skipped


def compare_runtimes(
    model: nn.Module,
    image: torch.Tensor,
    precisions: Sequence[str] = ("fp32",),
    runtimes: Sequence[str] = ("eager", "onnxruntime", "openvino"),
    threads: int = 2,
    rounds: int = 3,
) -> RuntimeComparison:
    """Time `model` (eval mode, CPU) in eager PyTorch and exported (portable attention, float32
    input, at `image`'s size) in the runtimes, at each precision they offer, in interleaved
    rounds (`interleaved_timings`) on `image` (3, H, W), with `threads` for all.

    Eager float32 always runs: it is the reference of the speed-ups and the detection check.
    A runtime that is not installed or a precision the device lacks is skipped, with the reason.
    """
    unknown = [r for r in runtimes if r not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown runtimes {unknown}; choose from {tuple(PRECISIONS)}")
    offered = offered_precisions(precisions, runtimes)
    eager = ExportableDetector(model).eval()
    # eager float32 is the reference, always timed; its other precisions run first, as listed
    runners = {
        f"eager {precision}": ExportableDetector(eager_at_precision(model, precision)).eval()
        for precision in offered.get("eager", [])
        if precision != "fp32"
    }
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        skipped = {}
        if any(r != "eager" for r in runtimes):
            path = export_onnx(
                model, Path(tmp) / "model.onnx", tuple(image.shape[-2:]), input_dtype=torch.float32
            )
            loaded, skipped = load_exported(path, offered, threads, ["CPUExecutionProvider"])
            runners.update(loaded)
        calls = {"eager fp32": lambda: eager(image)}
        calls.update({name: (lambda r=r: r(image)) for name, r in runners.items()})
        timings = interleaved_timings(calls, rounds)
        reference = eager(image)
        distances = {
            name: set_distance(_detections(r(image)), reference, AGREE_SCORE_TOL, AGREE_BOX_TOL)
            for name, r in runners.items()
        }
    return RuntimeComparison(timings, distances, skipped)
