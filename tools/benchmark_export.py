#!/usr/bin/env python
"""Time a detector in eager PyTorch and exported to ONNX Runtime and OpenVINO, side by side on one image.

    python tools/benchmark_export.py --config-file projects/focus_detr/configs/models/focus_detr_r50.py \\
        --input-size 800 1216 --threads 2 --rounds 5 [train.init_checkpoint=model.pth]

Exports the model (portable attention, float32 input) to a temporary file, then runs eager,
ONNX Runtime and OpenVINO (when installed) in interleaved rounds on the same synthesized image
(batch 1, `--threads` for all), each at the `--precisions` it offers (e.g. `--precisions fp32
bf16 int8`), and prints the median and minimum seconds per image, each time's ratio to the
compute floor (the model's fvcore multiply-adds divided by a float32 matrix product's rate,
measured in the same run with the same threads), and the largest difference of their
detections from eager float32 (matched as sets). Needs `pip install -e '.[deploy]'`.
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config-file", required=True, help="LazyConfig file defining `model`")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=(800, 1216))
    p.add_argument("--threads", type=int, default=2, help="CPU threads of both runtimes")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        metavar="P",
        help="fp32, bf16 (eager autocast, OpenVINO hint), int8 (ONNX Runtime, "
        "dynamic quantization); each runtime runs those it offers",
    )
    p.add_argument(
        "--gemm-size",
        type=int,
        default=2048,
        help="side of the float32 matrix product timed for the compute floor",
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY=VALUE",
        help="config overrides, e.g. train.init_checkpoint=model.pth",
    )
    args = p.parse_args(argv)
    if any(o.startswith("--") for o in args.opts):
        p.error("options must come before the key=value overrides")
    if any("=" in x for x in args.precisions):
        p.error(
            "--precisions took a key=value override: give --precisions before another "
            "option, e.g. --precisions fp32 int8 --threads 2 train.init_checkpoint=..."
        )
    if args.rounds < 1 or args.threads < 1:
        p.error("--rounds and --threads must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    import copy

    import torch

    from focus_detr.analysis import build_model, flop_analysis, load_config
    from focus_detr.deploy import (
        ExportableDetector,
        export_onnx,
        interleaved_timings,
        load,
        set_distance,
    )
    from focus_detr.deploy.precision import PRECISIONS, check_precision
    from focus_detr.deploy.timing import compute_floor_ratio, matmul_rate
    from focus_detr.engine.allocator import configure_allocator
    from focus_detr.modeling import optimize

    print(f"allocator: {configure_allocator()}")  # as the other tools: freed memory reused
    torch.set_num_threads(args.threads)
    model = build_model(load_config(args.config_file, args.opts), "cpu")
    image = torch.rand(3, *args.input_size, generator=torch.Generator().manual_seed(0)) * 255
    eager = ExportableDetector(model).eval()
    offered = {
        r: [check_precision(r, p) for p in args.precisions if _offers(r, p)] for r in PRECISIONS
    }
    unknown = [p for p in args.precisions if not any(_offers(r, p) for r in PRECISIONS)]
    if unknown:
        raise SystemExit(f"--precisions: {unknown} is offered by no runtime ({PRECISIONS})")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(
            model, Path(tmp) / "model.onnx", args.input_size, input_dtype=torch.float32
        )
        runtimes = {}
        for precision in offered["eager"]:
            if precision != "fp32":
                reduced = optimize(
                    copy.deepcopy(model),
                    fold_norms=model.fold_backbone_norms,
                    reduced_precision=precision,
                )
                runtimes[f"eager {precision}"] = _EagerImage(ExportableDetector(reduced).eval())
        for precision in offered["onnxruntime"]:
            runtimes[f"onnxruntime {precision}"] = load(
                path, providers=["CPUExecutionProvider"], threads=args.threads, precision=precision
            )
        for precision in offered["openvino"]:
            try:
                runtimes[f"openvino {precision}"] = load(
                    path, runtime="openvino", threads=args.threads, precision=precision
                )
            except (ImportError, ValueError) as e:
                print(f"openvino {precision} skipped: {e}")
        runners = {"eager fp32": lambda: eager(image)}
        runners.update({name: (lambda r=r: r(image)) for name, r in runtimes.items()})
        with torch.no_grad():
            timings = interleaved_timings(runners, args.rounds)
            reference = eager(image)
            results = {name: _detections(r(image)) for name, r in runtimes.items()}
            rate = matmul_rate(args.gemm_size)
            macs = flop_analysis(model, [image]).total()
    size = "x".join(map(str, args.input_size))
    floor = macs / rate
    print(
        f"model {macs / 1e9:.1f} GFLOP (multiply-adds, fvcore); float32 {args.gemm_size}^3 "
        f"matrix product {rate / 1e9:.1f} GFLOP/s with {args.threads} threads: compute floor "
        f"{floor:.3f} s"
    )
    for name, t in timings.items():
        print(
            f"{name:18s} {size} {args.threads} threads: median {t['median_s']:.3f} s, "
            f"min {t['min_s']:.3f} s; "
            f"{compute_floor_ratio(t['median_s'], macs, rate):.1f}x the float32 floor"
        )
    for name, ours in results.items():
        gap = set_distance(ours, reference, 1e-4, 1e-2)
        print(
            f"speed-up {name} / eager fp32: "
            f"{timings['eager fp32']['median_s'] / timings[name]['median_s']:.2f}x; detections "
            f"{'agree' if gap <= 1 else 'DIFFER'} within 1e-4 score / 0.01 px "
            f"(distance {gap:.2g})"
        )


class _EagerImage:
    """An eager `ExportableDetector` called like the runtimes (image in, detections out)."""

    def __init__(self, detector):
        self.detector = detector

    def __call__(self, image):
        import torch

        with torch.no_grad():
            return self.detector(image)


def _detections(result):
    """(boxes, scores, labels) of an `Instances` or of an eager detector's tuple."""
    if isinstance(result, tuple):
        return result
    return result.pred_boxes.tensor, result.scores, result.pred_classes


def _offers(runtime, precision) -> bool:
    from focus_detr.deploy.precision import check_precision

    try:
        check_precision(runtime, precision)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    main()
