#!/usr/bin/env python
"""Export a whole detector (DINO, Focus-DETR, Sparse DETR) to one ONNX graph: image in, boxes,
scores and labels out (see `focus_detr.deploy`).

    python tools/export_model.py --config-file projects/focus_detr/configs/focus_detr_tiny_synthetic.py \\
        --input-size 192 256 --output output/focus_detr_tiny.onnx train.init_checkpoint=output/main_job/model_final.pth
    python tools/export_model.py --config-file projects/focus_detr/configs/focus_detr_r50_4scale_12ep.py \\
        --input-size 800 1216 --attention plugin --output focus_detr_r50_trt.onnx train.init_checkpoint=focus_detr_r50.pth

The graph takes one image (3, H, W) of exactly `--input-size`, uint8 0..255 (or float32 with
`--input-dtype float32`) in the model's input format (BGR for the published R50 configs), and
returns its top detections: boxes (K, 4) xyxy in input pixels, scores (K,), labels (K,).
`--attention portable` (default) uses standard ONNX ops only; `plugin` puts one
MultiscaleDeformableAttnPlugin_TRT node per deformable attention in the graph, for TensorRT.
`--dynamic-shapes` makes the image height and width dynamic (one graph for any size: level
shapes and keep counts are computed in the graph; portable attention and ONNX only; `--input-size`
is then the size it is traced and checked at). `--batch N` makes the graph take (N, 3, H, W)
same-size images and return boxes (N, K, 4), scores (N, K), labels (N, K).
`--format torch-export` writes a torch.export program instead (run it with
`torch.export.load(path).module()(image)`). With `--check` the exported ONNX graph is run by
ONNX Runtime on a synthesized image and its detections compared with eager PyTorch's (as sets;
prints the largest difference). Needs `pip install -e '.[deploy]'` (onnx, onnxruntime,
openvino; `focus_detr.deploy.load(path, runtime="openvino")` runs the graph in OpenVINO).
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
    p.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "torch-export"],
        help="an ONNX graph, or a torch.export program (.pt2, torch.export.load)",
    )
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=(800, 1216),
        help="image size the graph serves (default 800 1216)",
    )
    p.add_argument(
        "--attention",
        default="portable",
        choices=["portable", "plugin"],
        help="deformable attention as standard ops or as TensorRT plugin nodes",
    )
    p.add_argument("--input-dtype", default="uint8", choices=["uint8", "float32"])
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 16)")
    p.add_argument(
        "--dynamic-shapes",
        action="store_true",
        help="dynamic image height and width (ONNX, portable attention)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        metavar="N",
        help="the graph takes a batch (N, 3, H, W) (default: one image (3, H, W))",
    )
    p.add_argument(
        "--num-detections",
        type=int,
        default=None,
        help="detections returned (default the model's evaluation count)",
    )
    p.add_argument("--output", default="model.onnx", help="where to write the graph")
    p.add_argument(
        "--check", action="store_true", help="run the graph in ONNX Runtime and compare with eager"
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY=VALUE",
        help="config overrides, e.g. train.init_checkpoint=model.pth",
    )
    args = p.parse_args(argv)
    stray = [o for o in args.opts if o.startswith("--")]
    if stray:
        p.error(f"options must come before the key=value overrides: {stray}")
    if min(args.input_size) <= 0:
        p.error(f"--input-size must be positive, got {args.input_size}")
    if args.batch is not None and args.batch < 1:
        p.error(f"--batch must be a positive number of images, got {args.batch}")
    if args.dynamic_shapes and args.format == "torch-export":
        p.error(
            "--dynamic-shapes works with --format onnx only: a torch.export program serves "
            "one input size (export one per size, or use --format onnx --dynamic-shapes)"
        )
    if args.dynamic_shapes and args.attention == "plugin":
        p.error(
            "--dynamic-shapes works with --attention portable only: TensorRT's ONNX parser "
            "takes TopK's k only as a constant, and the dynamic graph computes it from the "
            "input size; export the plugin form once per input size"
        )
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch

    from focus_detr.analysis import build_model, load_config
    from focus_detr.deploy import (
        ExportableDetector,
        export_onnx,
        export_program,
        load,
        set_distance,
    )

    cfg = load_config(args.config_file, args.opts)
    model = build_model(cfg, "cpu")
    dtype = getattr(torch, args.input_dtype)
    h, w = ("H", "W") if args.dynamic_shapes else args.input_size
    shape = f"(3, {h}, {w})" if args.batch is None else f"({args.batch}, 3, {h}, {w})"
    if args.format == "torch-export":
        program = export_program(
            model,
            args.input_size,
            attention=args.attention,
            input_dtype=dtype,
            num_detections=args.num_detections,
            batch=args.batch,
        )
        torch.export.save(program, args.output)
        print(
            f"wrote {args.output}: torch.export program, image {shape} {args.input_dtype} -> "
            "boxes, scores, labels"
        )
        return
    path = export_onnx(
        model,
        args.output,
        args.input_size,
        opset=args.opset,
        attention=args.attention,
        input_dtype=dtype,
        num_detections=args.num_detections,
        dynamic_shapes=args.dynamic_shapes,
        batch=args.batch,
    )
    print(
        f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): image {shape} "
        f"{args.input_dtype} -> boxes, scores, labels"
    )
    if args.check:
        if args.attention == "plugin":
            sys.exit(
                "--check runs ONNX Runtime, which has no TensorRT plugin: export with "
                "--attention portable to check"
            )
        image = torch.randint(
            0,
            256,
            (3, *args.input_size),
            generator=torch.Generator().manual_seed(0),
            dtype=torch.uint8,
        ).to(dtype)
        result = load(path)(image if args.batch is None else image.expand(args.batch, -1, -1, -1))
        result = result if args.batch is None else result[-1]
        with torch.no_grad():
            eager = ExportableDetector(model, args.num_detections)(image)
        ours = (result.pred_boxes.tensor, result.scores, result.pred_classes)
        print(
            f"ONNX Runtime vs eager on a random image: largest difference "
            f"{set_distance(ours, eager, 1.0, float('inf')):.2g} in score, "
            f"{set_distance(ours, eager, float('inf'), 1.0):.2g} px in box (matched as sets)"
        )


if __name__ == "__main__":
    main()
