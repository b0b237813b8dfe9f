"""Inference latency of detectors: whole model and its parts, several models interleaved.

Robust on a noisy machine: every model runs once per round, the models' order rotates each
round, and the summaries are medians with their spread (quartiles, min, max). The ratio of two
models is the median of their per-round ratios (paired: both measured under the same load).
On CUDA every clock reading is preceded by `torch.cuda.synchronize()`.

Clocks (`CLOCKS`): "wall" (time.perf_counter, the default: what a user waits) or "cpu"
(time.process_time: CPU seconds of this process summed over its threads; on a shared CPU it
counts only this process's work, so it is steadier than wall time when other processes compete,
but it is not a latency: with T busy threads it is up to T times the wall time, and it includes
the OpenMP threads' spin-waiting between parallel regions, which weighs more on models made of
many small ops (e.g. a sparse encoder): use it to compare runs of one model, and wall time on a
quiet machine for ratios between models).
"""

import statistics
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = [
    "CLOCKS",
    "LATENCY_PARTS",
    "LatencyResult",
    "PartTimer",
    "detail_parts",
    "measure_interleaved",
    "paired_ratio",
    "set_threads",
    "spread",
    "synchronize",
]

# timed parts (module paths); "rest" = total - their sum (heads, query selection, pre/post)
LATENCY_PARTS = OrderedDict(
    backbone="backbone",
    neck="neck",
    encoder="transformer.encoder",
    decoder="transformer.decoder",
)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def detail_parts(model: nn.Module) -> Dict[str, List[str]]:
    """Submodule families of the encoder and decoder, each timed over all its calls: for every
    layer submodule (e.g. "encoder.layers.*.attentions.1", "decoder.layers.*.ffns.0") the paths
    of all layers, and the other children of encoder and decoder (e.g. "encoder.selector",
    "decoder.bbox_embed"). Use as `PartTimer(..., nested=...)` parts (they overlap the main
    parts)."""
    families: Dict[str, List[str]] = OrderedDict()
    for part in ("encoder", "decoder"):
        prefix = f"transformer.{part}"
        try:
            module = model.get_submodule(prefix)
        except AttributeError:
            continue
        for child_name, child in module.named_children():
            if child_name == "layers":
                for i, layer in enumerate(child):
                    for sub_name, sub in layer.named_children():
                        subs = (
                            [f"{sub_name}.{j}" for j in range(len(sub))]
                            if isinstance(sub, nn.ModuleList)
                            else [sub_name]
                        )
                        for name in subs:
                            families.setdefault(f"{part}.layers.*.{name}", []).append(
                                f"{prefix}.layers.{i}.{name}"
                            )
            elif isinstance(child, nn.ModuleList):
                families[f"{part}.{child_name}"] = [
                    f"{prefix}.{child_name}.{j}" for j in range(len(child))
                ]
            else:
                families[f"{part}.{child_name}"] = [f"{prefix}.{child_name}"]
    return families


def synchronize(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def set_threads(num_threads: Optional[int]) -> int:
    """Set torch's intra-op threads (None: leave as is); returns the number in use."""
    if num_threads is not None:
        if num_threads <= 0:
            raise ValueError(f"threads must be positive, got {num_threads}")
        torch.set_num_threads(num_threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable before the first parallel work
            pass
    return torch.get_num_threads()


class PartTimer:
    """Times the forward calls of a model's parts with forward pre/post hooks.

    Args:
        model: the detector.
        parts: name -> module path, or a list of paths timed together (e.g. the same submodule
            of every encoder layer); paths the model lacks are skipped, and names with none.
            Default `LATENCY_PARTS`.
        device: where the model runs (CUDA: synchronized before every clock reading).
        clock: "wall" or "cpu" (`CLOCKS`).
        nested: names of `parts` that lie inside other parts (a detail breakdown): timed, but
            left out of the "rest" of `LatencyResult.part_medians`.

    Use: `with timer.recording(): model(inputs)`, then `timer.last` (name -> seconds of that
    call, summed over the part's calls).
    """

    def __init__(
        self,
        model: nn.Module,
        parts: Dict[str, Union[str, Sequence[str]]] = LATENCY_PARTS,
        device: Optional[torch.device] = None,
        clock: str = "wall",
        nested: Sequence[str] = (),
    ):
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
        self.clock = CLOCKS[clock]
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.modules: Dict[str, List[nn.Module]] = OrderedDict()
        for name, paths in parts.items():
            found = []
            for path in [paths] if isinstance(paths, str) else paths:
                try:
                    found.append(model.get_submodule(path))
                except AttributeError:
                    continue
            if found:
                self.modules[name] = found
        self.nested = {n for n in nested if n in self.modules}
        self.last: Dict[str, float] = {}
        self._starts: Dict[Tuple[str, int], List[float]] = {}

    @contextmanager
    def recording(self):
        self.last = {name: 0.0 for name in self.modules}
        handles = []
        for name, modules in self.modules.items():
            for i, module in enumerate(modules):
                handles.append(module.register_forward_pre_hook(self._pre((name, i))))
                handles.append(module.register_forward_hook(self._post((name, i))))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _pre(self, key: Tuple[str, int]) -> Callable:
        def hook(module, args):
            synchronize(self.device)
            self._starts.setdefault(key, []).append(self.clock())  # a stack: re-entrant calls

        return hook

    def _post(self, key: Tuple[str, int]) -> Callable:
        def hook(module, args, output):
            synchronize(self.device)
            self.last[key[0]] += self.clock() - self._starts[key].pop()

        return hook


def _model_device(model: nn.Module) -> torch.device:
    if hasattr(model, "device"):
        return torch.device(model.device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@dataclass
class LatencyResult:
    """Per-run seconds of one model: `total` and, per part, `parts[name]` (same length)."""

    total: List[float] = field(default_factory=list)
    parts: Dict[str, List[float]] = field(default_factory=dict)
    nested: set = field(default_factory=set)  # detail parts, not in "rest"

    def median(self) -> float:
        return statistics.median(self.total)

    def part_medians(self, nested: bool = False) -> Dict[str, float]:
        """Median seconds per part, plus "rest" = median of (total - sum of parts) per run;
        with `nested`, the median of each nested (detail) part instead."""
        if nested:
            return OrderedDict(
                (k, statistics.median(v)) for k, v in self.parts.items() if k in self.nested
            )
        top = {k: v for k, v in self.parts.items() if k not in self.nested}
        out = OrderedDict((k, statistics.median(v)) for k, v in top.items())
        if top:
            rest = [t - sum(p[i] for p in top.values()) for i, t in enumerate(self.total)]
            out["rest"] = statistics.median(rest)
        return out


def spread(values: Sequence[float]) -> Dict[str, float]:
    """min, 25th percentile, median, 75th percentile, max of `values`."""
    v = sorted(values)
    if not v:
        raise ValueError("no values")
    if len(v) == 1:
        q1 = q3 = v[0]
    else:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    return {"min": v[0], "q1": q1, "median": statistics.median(v), "q3": q3, "max": v[-1]}


def paired_ratio(baseline: Sequence[float], other: Sequence[float]) -> Dict[str, float]:
    """Spread of the per-round ratios baseline / other (> 1: `other` is faster)."""
    if len(baseline) != len(other):
        raise ValueError(f"paired runs differ in length: {len(baseline)} vs {len(other)}")
    return spread([b / o for b, o in zip(baseline, other)])


def measure_interleaved(
    runners: Dict[str, Callable[[], Any]],
    rounds: int,
    warmup: int = 1,
    timers: Optional[Dict[str, PartTimer]] = None,
    devices: Optional[Dict[str, torch.device]] = None,
    progress: Optional[Callable[[int, str, float], None]] = None,
    clock: str = "wall",
) -> Dict[str, LatencyResult]:
    """Time each runner once per round, rotating their order every round.

    Args:
        runners: name -> zero-argument callable (one inference).
        rounds: timed rounds (each runner runs `rounds` times).
        warmup: untimed rounds first (each runner `warmup` times).
        timers: optional name -> `PartTimer` of the runner's model (part breakdown).
        devices: name -> device (CUDA: synchronized around each run). Default CPU.
        progress: called as progress(round, name, seconds) after each timed run.
        clock: "wall" or "cpu" (see the module docstring); part timers use their own clock.
    Returns:
        name -> LatencyResult.
    """
    if rounds <= 0:
        raise ValueError(f"rounds must be positive, got {rounds}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    names = list(runners)
    timers = timers or {}
    devices = devices or {}
    results = {
        n: LatencyResult(
            parts={p: [] for p in (timers[n].modules if n in timers else ())},
            nested=set(timers[n].nested) if n in timers else set(),
        )
        for n in names
    }
    with torch.inference_mode():
        for _ in range(warmup):
            for n in names:
                runners[n]()
        for r in range(rounds):
            shift = r % len(names)
            for n in names[shift:] + names[:shift]:
                device = devices.get(n, torch.device("cpu"))
                timer = timers.get(n)
                synchronize(device)
                if timer is not None:
                    with timer.recording():
                        start = now()
                        runners[n]()
                        synchronize(device)
                        seconds = now() - start
                    for p, s in timer.last.items():
                        results[n].parts[p].append(s)
                else:
                    start = now()
                    runners[n]()
                    synchronize(device)
                    seconds = now() - start
                results[n].total.append(seconds)
                if progress is not None:
                    progress(r, n, seconds)
    return results
