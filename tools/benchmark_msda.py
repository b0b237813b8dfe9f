#!/usr/bin/env python
"""Benchmark the multi-scale deformable-attention backends (forward, forward+backward, memory).

Shapes (DINO-R50, 800x1333 input, strides 8/16/32/64 -> levels (100,167), (50,84), (25,42),
(13,21): 22,223 value tokens; 8 heads x 32 channels, 4 levels, 4 points):
  encoder    queries = all value tokens (dense encoder self-attention)
  encoder30  queries = 30% of the tokens (Sparse DETR / Focus-DETR encoder, keep ratio 0.3)
  decoder    900 queries (DINO decoder cross-attention)
Sampling locations are realistic rather than uniform: encoder queries sample around their own
token (offsets of a few pixels), decoder queries inside random boxes, so that memory locality
resembles a trained model's.

Reported per (shape, dtype, backend): median wall time of the forward (under no_grad) and of
forward+backward (gradients for value, locations and weights), the peak memory above the inputs
during forward+backward, and the speedup over the `pytorch` backend (t_pytorch / t_backend).
Peak memory: CUDA `max_memory_allocated` minus the memory allocated before the call; on CPU the
peak of live bytes reported by the CPU allocator to the PyTorch profiler (profile_memory=True,
alloc/free records summed in time order) during one extra, untimed forward+backward. Both
include the gradients (which outlive the call) and the backend's own temporaries.
On CUDA, the footer gives the time to move the compulsory bytes (read value, locations, weights,
write output) and to read every sampled corner once, at the bandwidth of a large device copy.

Examples:
  python tools/benchmark_msda.py --device cpu --threads 2 --repeat 3
  python tools/benchmark_msda.py --device cuda --dtype float32,bfloat16
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

from focus_detr.cli import tool_parser  # noqa: E402  (no torch)

LEVELS = [(100, 167), (50, 84), (25, 42), (13, 21)]
HEADS, HEAD_DIM, POINTS = 8, 32, 4
SHAPES = {"encoder": 1.0, "encoder30": 0.3, "decoder": 900}
DTYPES = ("float32", "bfloat16", "float16", "float64")  # torch attribute names


def _count(minimum):
    """argparse type: an int >= `minimum`."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _names(allowed):
    """argparse type: a comma list of names out of `allowed`."""

    def parse(text):
        names = text.split(",")
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(map(repr, unknown))}; choose from {','.join(allowed)}"
            )
        return names

    return parse


def parse_args(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--dtype",
        type=_names(DTYPES),
        default=None,
        help=f"comma list of {','.join(DTYPES)} (default: float32 on CPU, "
        "float32,bfloat16 on CUDA)",
    )
    p.add_argument(
        "--repeat",
        type=_count(1),
        default=None,
        help="timed runs per measurement, median reported (default 5 CPU, 20 CUDA)",
    )
    p.add_argument("--warmup", type=_count(0), default=1, help="untimed runs first (default 1)")
    p.add_argument(
        "--shapes",
        type=_names(tuple(SHAPES)),
        default=list(SHAPES),
        help=f"comma list of {','.join(SHAPES)}",
    )
    p.add_argument(
        "--backends",
        default=None,
        help="comma list (default: every backend available on the device)",
    )
    p.add_argument("--batch", type=_count(1), default=1, help="images per batch (default 1)")
    p.add_argument("--threads", type=_count(1), default=None, help="CPU threads (torch and OpenMP)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (default); cpu: CPU time of this process, all "
        "threads summed (CPU only; robust on a shared machine, use --threads 1)",
    )
    p.add_argument("--no-backward", action="store_true", help="time the forward only")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory run")
    return p.parse_args(argv)


def make_inputs(torch, shape, batch, dtype, device, seed=0):
    """value, spatial_shapes, level_start_index, locations, weights for one benchmark shape."""
    g = torch.Generator().manual_seed(seed)
    sizes = [h * w for h, w in LEVELS]
    s = sum(sizes)
    shapes = torch.tensor(LEVELS, dtype=torch.long)
    starts = torch.tensor([sum(sizes[:i]) for i in range(len(sizes))], dtype=torch.long)
    wh = shapes.flip(-1).double()  # (levels, 2) as (W, H)
    spec = SHAPES[shape]
    if isinstance(spec, float):  # encoder: queries are (a subset of) the tokens themselves
        centers = torch.cat(
            [
                torch.stack(
                    torch.meshgrid(
                        (torch.arange(w) + 0.5) / w, (torch.arange(h) + 0.5) / h, indexing="xy"
                    ),
                    -1,
                ).reshape(-1, 2)
                for h, w in LEVELS
            ]
        ).double()  # (S, 2) as (x, y)
        q = round(spec * s)
        keep = torch.randperm(s, generator=g)[:q].sort().values if q < s else torch.arange(s)
        ref = centers[keep][None, :, None, None, None, :].expand(batch, q, 1, 1, 1, 2)
        # a few pixels around the reference on every level
        offsets = 2.0 * torch.randn(
            batch, q, HEADS, len(LEVELS), POINTS, 2, generator=g, dtype=torch.float64
        )
        loc = ref + offsets / wh[:, None, :]
    else:  # decoder: points inside random boxes
        q = spec
        cxcy = torch.rand(batch, q, 1, 1, 1, 2, generator=g, dtype=torch.float64)
        box = 0.05 + 0.3 * torch.rand(batch, q, 1, 1, 1, 2, generator=g, dtype=torch.float64)
        inside = (
            torch.rand(batch, q, HEADS, len(LEVELS), POINTS, 2, generator=g, dtype=torch.float64)
            - 0.5
        )
        loc = cxcy + inside * box
    value = torch.randn(batch, s, HEADS, HEAD_DIM, generator=g, dtype=torch.float64)
    logits = torch.randn(batch, q, HEADS, len(LEVELS) * POINTS, generator=g, dtype=torch.float64)
    weights = logits.softmax(-1).view(batch, q, HEADS, len(LEVELS), POINTS)
    floats = [t.to(device=device, dtype=dtype).contiguous() for t in (value, loc, weights)]
    return floats[0], shapes.to(device), starts.to(device), floats[1], floats[2]


def _sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(torch, device, fn, repeat, warmup, clock=time.perf_counter):
    for _ in range(warmup):
        fn()
    _sync(torch, device)
    times = []
    for _ in range(repeat):
        start = clock()
        fn()
        _sync(torch, device)
        times.append(clock() - start)
    return statistics.median(times)


def peak_memory(torch, device, fn):
    """Peak bytes above the state before `fn` (see module docstring for the method)."""
    if device.type == "cuda":
        _sync(torch, device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(torch, device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    live = peak = 0
    for record in records:
        live += record.nbytes()
        peak = max(peak, live)
    return peak


def bandwidth(torch, device):
    """Bytes/s of a 1 GiB device-to-device copy (read + write)."""
    x = torch.empty(2**28, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    t = time_call(torch, device, lambda: y.copy_(x), repeat=10, warmup=2)
    return 2 * x.numel() * 4 / t


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler quiet
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch starts its pools
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from focus_detr.layers.ms_deform_attn import (
        BACKENDS,
        available_backends,
        backend_unavailable_reason,
        ms_deform_attn,
    )

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtypes = [
        getattr(torch, d)
        for d in (args.dtype or (["float32", "bfloat16"] if device.type == "cuda" else ["float32"]))
    ]
    repeat = args.repeat if args.repeat is not None else (20 if device.type == "cuda" else 5)
    if args.clock == "cpu" and device.type != "cpu":
        sys.exit("--clock cpu measures CPU time: use it with --device cpu")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    shapes = args.shapes
    backends = args.backends.split(",") if args.backends else available_backends(device)
    for b in backends:
        if b not in BACKENDS:
            sys.exit(f"unknown backend {b!r}; choose from {BACKENDS}")
        reason = backend_unavailable_reason(b, device)
        if reason:
            sys.exit(f"backend {b!r} unavailable on {device.type}: {reason}")

    hw = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"# torch {torch.__version__}, {hw}, batch {args.batch}, median {args.clock} time of "
        f"{repeat} runs (warmup {args.warmup})"
    )
    header = (
        "| shape | queries | dtype | backend | fwd ms | fwd+bwd ms | peak MiB | "
        "fwd speedup | fwd+bwd speedup |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    footers = []
    for shape in shapes:
        for dtype in dtypes:
            value, sshapes, starts, loc, weights = make_inputs(
                torch, shape, args.batch, dtype, device
            )
            q = loc.shape[1]
            rows, base = [], {}
            for b in backends:

                def fwd():
                    with torch.no_grad():
                        ms_deform_attn(value, sshapes, starts, loc, weights, backend=b)

                grads = [t.detach().clone().requires_grad_() for t in (value, loc, weights)]

                def fwd_bwd():
                    out = ms_deform_attn(grads[0], sshapes, starts, grads[1], grads[2], backend=b)
                    out.backward(torch.ones_like(out))
                    for t in grads:
                        t.grad = None

                t_f = time_call(torch, device, fwd, repeat, args.warmup, clock)
                t_fb = (
                    None
                    if args.no_backward
                    else time_call(torch, device, fwd_bwd, repeat, args.warmup, clock)
                )
                mem = None
                if not args.no_memory:
                    mem = peak_memory(torch, device, fwd if args.no_backward else fwd_bwd)
                if b == "pytorch":
                    base = {"f": t_f, "fb": t_fb}
                rows.append((b, t_f, t_fb, mem))
            for b, t_f, t_fb, mem in rows:

                def ratio(key, t):
                    return f"{base[key] / t:.2f}x" if base.get(key) and t else "-"

                print(
                    f"| {shape} | {q} | {str(dtype).replace('torch.', '')} | {b} | "
                    f"{t_f * 1e3:.1f} | {'-' if t_fb is None else f'{t_fb * 1e3:.1f}'} | "
                    f"{'-' if mem is None else f'{mem / 2**20:.0f}'} | {ratio('f', t_f)} | "
                    f"{ratio('fb', t_fb)} |",
                    flush=True,
                )
            if device.type == "cuda":
                elem = value.element_size()
                compulsory = (
                    value.numel()
                    + loc.numel()
                    + weights.numel()
                    + q * args.batch * HEADS * HEAD_DIM
                ) * elem
                sampled = 4 * weights.numel() * HEAD_DIM * elem
                footers.append((shape, dtype, compulsory, sampled))
            value = loc = weights = None  # freed before the next inputs (no del: fwd names them)
    if footers:
        bw = bandwidth(torch, device)
        print(f"\nDevice copy bandwidth {bw / 1e9:.0f} GB/s. Memory-bound floors (forward):")
        for shape, dtype, compulsory, sampled in footers:
            print(
                f"- {shape} {str(dtype).replace('torch.', '')}: compulsory bytes "
                f"{compulsory / bw * 1e3:.3f} ms, every sampled corner read once "
                f"{sampled / bw * 1e3:.3f} ms"
            )


if __name__ == "__main__":
    main()
