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
    import torch

    from focus_detr.analysis import build_model, flop_analysis, load_config
    from focus_detr.deploy.comparison import compare_runtimes
    from focus_detr.deploy.timing import matmul_rate
    from focus_detr.engine.allocator import configure_allocator

    print(f"allocator: {configure_allocator()}")  # as the other tools: freed memory reused
    torch.set_num_threads(args.threads)
    model = build_model(load_config(args.config_file, args.opts), "cpu")
    image = torch.rand(3, *args.input_size, generator=torch.Generator().manual_seed(0)) * 255
    try:
        comparison = compare_runtimes(
            model, image, args.precisions, threads=args.threads, rounds=args.rounds
        )
    except ValueError as e:
        raise SystemExit(f"--precisions: {e}")
    with torch.no_grad():
        rate = matmul_rate(args.gemm_size)
        macs = flop_analysis(model, [image]).total()
    size = "x".join(map(str, args.input_size))
    print(
        f"{size}, batch 1, {args.threads} threads, {args.rounds} interleaved rounds; model "
        f"{macs / 1e9:.1f} GFLOP (multiply-adds, fvcore); float32 {args.gemm_size}^3 matrix "
        f"product {rate / 1e9:.1f} GFLOP/s: compute floor {macs / rate:.3f} s"
    )
    print(comparison.table(macs, rate))


if __name__ == "__main__":
    main()
