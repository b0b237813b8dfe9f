#!/usr/bin/env python
"""Detections on image files or folders, drawn with detectron2's `Visualizer`, as PNG files.

    python tools/demo.py --config-file projects/focus_detr/configs/focus_detr_tiny_synthetic.py \\
        --input photos/ img.jpg --output out/demo --confidence-threshold 0.3 \\
        --opts train.init_checkpoint=output/focus_detr_tiny_synthetic/model_final.pth
    python tools/demo.py --config-file projects/focus_detr/configs/focus_detr_r50_4scale_36ep.py \\
        --input img.jpg --output img_detections.png train.init_checkpoint=focus_detr_r50.pth

Overrides `key=value` go after the options or after `--opts` (detrex's demo); ones given after
`--input` are taken as overrides too. `--output` is a folder (`<output>/<name>.png`, same size
as the input file), or with one input image a file name (`.png`/`.jpg`). Images are resized
like the config's test mapper, detections are drawn on the original image. A file that cannot
be decoded is named and skipped. When no detection of an image passes the threshold the tool
says so with the highest score seen (a model trained briefly scores low). Runs on the CPU by
default (`--device auto` uses the GPU when there is one). Class names come from the config's
test dataset metadata. detectron2's `Visualizer` needs OpenCV (`pip install
opencv-python-headless`); without it the boxes, class names and scores are drawn with PIL.

With `--onnx model.onnx` (written by tools/export_model.py) the exported graph runs instead of the
PyTorch model, in ONNX Runtime or `--runtime openvino`; the config still gives the test resize,
the input format and the class names. Each image is resized to the graph's fixed input size
(export at the size you serve) and the boxes are scaled back to the original image.
"""

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

from focus_detr.cli import (  # noqa: E402
    check_overrides,
    filter_known_warnings,
    split_overrides,
    tool_parser,
)

filter_known_warnings()  # before torch/detectron2 import: their import-time warnings

OUTPUT_FILE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_THRESHOLD = 0.5  # detrex's demo default


def parse_args(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--config-file", required=True, help="LazyConfig file defining `model`")
    p.add_argument("--input", nargs="+", required=True, help="image files or folders")
    p.add_argument(
        "--output",
        required=True,
        help="output folder for the PNG files, or with one input image the file to write",
    )
    p.add_argument(
        "--confidence-threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"draw detections scoring at least this (default {DEFAULT_THRESHOLD})",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto (GPU if any)")
    p.add_argument("--onnx", help="run this exported graph (tools/export_model.py) instead")
    p.add_argument(
        "--runtime",
        default="onnxruntime",
        choices=["onnxruntime", "openvino"],
        help="runtime of --onnx (default onnxruntime)",
    )
    p.add_argument(
        "--metadata", help="dataset name for class names (default: the config's test dataset)"
    )
    p.add_argument(
        "--opts",
        dest="more_opts",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="KEY=VALUE",
        help="config overrides (detrex's demo spelling; the same as giving them after the options)",
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides key=value, e.g. train.init_checkpoint=model.pth",
    )
    args = p.parse_args(argv)
    args.input, swallowed = split_overrides(args.input)
    if not args.input:
        p.error(f"--input names no image file or folder (only overrides {swallowed})")
    # overrides after the options may continue after an --opts (taken by them, not argparse)
    positional = [o for o in args.opts if o != "--opts"]
    args.opts = check_overrides(p, swallowed + positional + list(args.more_opts))
    if not 0.0 <= args.confidence_threshold <= 1.0:
        p.error(f"--confidence-threshold must be in [0, 1], got {args.confidence_threshold}")
    args.output_file = args.output.lower().endswith(OUTPUT_FILE_SUFFIXES)
    if args.output_file and (len(args.input) > 1 or os.path.isdir(args.input[0])):
        p.error(
            f"--output {args.output} is a file name, for one input image; {args.input} can hold "
            "several images: give an output folder"
        )
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answered before torch and detectron2 load

import torch  # noqa: E402

import focus_detr.data  # noqa: E402,F401  (registers the built-in dataset)
from focus_detr.analysis import build_model, load_config, resolve_device  # noqa: E402
from focus_detr.analysis.model_io import iter_image_file_inputs  # noqa: E402
from focus_detr.deploy import detect_resized, load  # noqa: E402
from focus_detr.engine.allocator import configure_allocator  # noqa: E402


def _metadata(cfg, name):
    from detectron2.data import MetadataCatalog

    if name is None and "dataloader" in cfg and "test" in cfg.dataloader:
        names = cfg.dataloader.test.dataset.get("names")
        name = names if isinstance(names, str) else (names[0] if names else None)
    return MetadataCatalog.get(name) if name else MetadataCatalog.get("__unused")


def _has_opencv() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def draw_detections(image, instances, metadata, path: str, use_visualizer: bool) -> None:
    """Write `image` (H, W, 3 RGB uint8) with `instances` drawn as a PNG of the same size."""
    if use_visualizer:
        from detectron2.utils.visualizer import Visualizer

        Visualizer(image, metadata, scale=1.0).draw_instance_predictions(instances).save(path)
        return
    from PIL import Image, ImageDraw

    from focus_detr.analysis.drawing import LEVEL_COLORS

    names = metadata.get("thing_classes", None)
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    for box, score, cls in zip(
        instances.pred_boxes.tensor.tolist(),
        instances.scores.tolist(),
        instances.pred_classes.tolist(),
    ):
        color = LEVEL_COLORS[cls % len(LEVEL_COLORS)]
        draw.rectangle(box, outline=color, width=2)
        name = names[cls] if names and cls < len(names) else str(cls)
        draw.text((box[0] + 2, box[1] + 1), f"{name} {score:.0%}", fill=color)
    pil.save(path)


def _output_path(args, file_name, written):
    """The file to write for `file_name`: `--output` itself, or `<output>/<stem>.png` (a suffix
    _1, _2, ... for a name already written: the same name in two input folders)."""
    if args.output_file:
        return args.output
    stem = Path(file_name).stem
    path = os.path.join(args.output, stem + ".png")
    n = 1
    while path in written:
        path = os.path.join(args.output, f"{stem}_{n}.png")
        n += 1
    return path


def main(argv=None):
    """Draw every readable input image; returns the paths written."""
    from detectron2.data.detection_utils import read_image

    args = parse_args(argv)
    device = resolve_device(args.device)
    configure_allocator()  # large CPU tensors reused instead of page-faulted in per image
    cfg = load_config(args.config_file, args.opts)
    if args.onnx:
        exported = load(args.onnx, runtime=args.runtime)

        def detect(x):
            return detect_resized(exported, x["image"], x["height"], x["width"])
    else:
        model = build_model(cfg, device, cfg.train.get("init_checkpoint", None) or None)

        def detect(x):
            return model([x])[0]["instances"].to("cpu")

    metadata = _metadata(cfg, args.metadata)
    use_visualizer = _has_opencv()
    if not use_visualizer:
        logging.getLogger(__name__).warning(
            "OpenCV is not installed (pip install opencv-python-headless): drawing with PIL "
            "instead of detectron2's Visualizer"
        )
    os.makedirs(
        os.path.dirname(os.path.abspath(args.output)) if args.output_file else args.output,
        exist_ok=True,
    )
    skipped = []

    def unreadable(path, error):
        skipped.append(path)
        print(f"{path}: skipped, cannot decode the image ({error})", flush=True)

    written, best_scores = [], []
    threshold = args.confidence_threshold
    for x in iter_image_file_inputs(cfg, args.input, on_unreadable=unreadable):
        start = time.perf_counter()
        with torch.no_grad():
            instances = detect(x)
        seconds = time.perf_counter() - start
        keep = instances[instances.scores >= threshold]
        best = float(instances.scores.max()) if len(instances) else None
        best_scores.append(best)
        image = read_image(x["file_name"], format="RGB")
        path = _output_path(args, x["file_name"], written)
        draw_detections(image, keep, metadata, path, use_visualizer)
        written.append(path)
        found = f"{len(keep)} detection(s) >= {threshold}"
        if not len(keep):
            found = (
                f"no detection >= {threshold} (highest score "
                f"{'-' if best is None else f'{best:.2f}'})"
            )
        print(f"{x['file_name']}: {found} in {seconds:.2f} s -> {path}", flush=True)
    if not written:
        raise SystemExit(f"no input image could be decoded: {skipped}")
    print(_summary(written, skipped, best_scores, threshold))
    return written


def _summary(written, skipped, best_scores, threshold):
    wrote = f"wrote {len(written)} image(s)"
    if skipped:
        wrote += f", skipped {len(skipped)} that could not be decoded: {', '.join(skipped)}"
    lines = [wrote]
    below = [s for s in best_scores if s is None or s < threshold]
    scored = [s for s in best_scores if s is not None]
    if below and scored:
        lines.append(
            f"{len(below)} of {len(best_scores)} image(s) have no detection >= {threshold}; the "
            f"highest score seen is {max(scored):.2f}: a lower --confidence-threshold (e.g. "
            f"{max(scored) * 0.9:.2f}) shows the best detections of a model that scores low"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
