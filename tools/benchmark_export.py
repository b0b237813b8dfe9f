#!/usr/bin/env python
"""Time a detector in eager PyTorch and exported to ONNX Runtime and OpenVINO, side by side on one image.

    python tools/benchmark_export.py --config-file projects/focus_detr/configs/models/focus_detr_r50.py \\
        --input-size 800 1216 --threads 2 --rounds 5 [train.init_checkpoint=model.pth]

Exports the model (portable attention, float32 input) to a temporary file, then runs eager,
ONNX Runtime and OpenVINO (when installed) in interleaved rounds on the same synthesized image (batch 1, `--threads` for
both), and prints the median and minimum seconds per image and the largest difference of their
detections (matched as sets). Needs `pip install -e '.[deploy]'`.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="LazyConfig file defining `model`")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=(800, 1216))
    p.add_argument("--threads", type=int, default=2, help="CPU threads of both runtimes")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                   help="config overrides, e.g. train.init_checkpoint=model.pth")
    args = p.parse_args(argv)
    if any(o.startswith("--") for o in args.opts):
        p.error("options must come before the key=value overrides")
    if args.rounds < 1 or args.threads < 1:
        p.error("--rounds and --threads must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch

    from focus_detr.analysis import build_model, load_config
    from focus_detr.deploy import (ExportableDetector, export_onnx, interleaved_timings, load,
                                   set_distance)

    torch.set_num_threads(args.threads)
    model = build_model(load_config(args.config_file, args.opts), "cpu")
    image = torch.rand(3, *args.input_size, generator=torch.Generator().manual_seed(0)) * 255
    eager = ExportableDetector(model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", args.input_size,
                           input_dtype=torch.float32)
        runtimes = {"onnxruntime": load(path, providers=["CPUExecutionProvider"],
                                        threads=args.threads)}
        try:
            runtimes["openvino"] = load(path, runtime="openvino", threads=args.threads)
        except ImportError as e:
            print(f"openvino skipped: {e}")
        runners = {"eager": lambda: eager(image)}
        runners.update({name: (lambda r=r: r(image)) for name, r in runtimes.items()})
        with torch.no_grad():
            timings = interleaved_timings(runners, args.rounds)
            reference = eager(image)
            results = {name: r(image) for name, r in runtimes.items()}
    size = "x".join(map(str, args.input_size))
    for name, t in timings.items():
        print(f"{name:12s} {size} {args.threads} threads: median {t['median_s']:.3f} s, "
              f"min {t['min_s']:.3f} s")
    for name, ours in results.items():
        gap = set_distance((ours.pred_boxes.tensor, ours.scores, ours.pred_classes), reference,
                           1e-4, 1e-2)
        print(f"speed-up {name} / eager: "
              f"{timings['eager']['median_s'] / timings[name]['median_s']:.2f}x; detections "
              f"{'agree' if gap <= 1 else 'DIFFER'} within 1e-4 score / 0.01 px "
              f"(distance {gap:.2g})")


if __name__ == "__main__":
    main()
