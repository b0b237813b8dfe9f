#!/usr/bin/env python
"""COCO AP of a detector exported to ONNX and run by ONNX Runtime and OpenVINO at each precision
they offer, beside eager PyTorch (float32 and bfloat16), on the config's test set: the accuracy
cost of each runtime and precision.

    python tools/evaluate_export.py --config-file projects/focus_detr/configs/focus_detr_tiny_synthetic.py \\
        --precisions fp32 bf16 int8 train.init_checkpoint=output/main_job/model_final.pth

The model is exported once with dynamic image sizes (portable attention, uint8 input), so every
test image runs at the size the config's test resize gives it, as in eager evaluation. Needs
`pip install -e '.[deploy]'`.
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

from focus_detr.cli import check_overrides, filter_known_warnings, tool_parser  # noqa: E402

filter_known_warnings()  # before torch/detectron2 import: their import-time warnings


def parse_args(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--config-file", required=True, help="LazyConfig with model and test data")
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        metavar="P",
        help="fp32, bf16, int8: each runtime evaluates those it offers",
    )
    p.add_argument("--images", type=int, default=None, help="first N test images (default all)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: each runtime's default)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = p.parse_args(argv)
    args.opts = check_overrides(p, args.opts)
    if any("=" in x for x in args.precisions):
        p.error("--precisions took a key=value override: give --precisions before the overrides")
    if args.images is not None and args.images < 1:
        p.error(f"--images must be >= 1, got {args.images}")
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch

    from focus_detr.analysis import build_model, dataset_inputs, load_config
    from focus_detr.deploy import ExportedModel, evaluate_detectors, export_onnx
    from focus_detr.deploy.comparison import eager_at_precision, load_exported, offered_precisions

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        offered = offered_precisions(args.precisions, ("eager", "onnxruntime", "openvino"))
    except ValueError as e:
        raise SystemExit(f"--precisions: {e}")
    cfg = load_config(args.config_file, args.opts)
    model = build_model(cfg, "cpu").eval()
    models = {f"eager {p}": eager_at_precision(model, p) for p in offered["eager"]}
    with tempfile.TemporaryDirectory() as tmp:
        # traced at the first test image's size; the graph serves every size
        size = tuple(dataset_inputs(cfg, 1)[0]["image"].shape[-2:])
        path = export_onnx(model, Path(tmp) / "model.onnx", size, dynamic_shapes=True)
        loaded, skipped = load_exported(path, offered, args.threads)
        models.update({name: ExportedModel(detector) for name, detector in loaded.items()})
        for name, why in skipped.items():
            print(f"{name} skipped: {why}")
        results = evaluate_detectors(cfg, models, args.images)
    reference = results.get("eager fp32", {}).get("bbox", {})
    print("runtime, precision | AP | AP50 | AP75 | AP - eager fp32 AP")
    for name, result in results.items():
        box = result.get("bbox", {})
        gap = box["AP"] - reference["AP"] if reference else float("nan")
        print(f"{name} | {box['AP']:.2f} | {box['AP50']:.2f} | {box['AP75']:.2f} | {gap:+.2f}")


if __name__ == "__main__":
    main()
