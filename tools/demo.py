#!/usr/bin/env python
"""Detections on image files or folders, drawn with detectron2's `Visualizer`, as PNG files.

    python tools/demo.py --config-file projects/focus_detr/configs/focus_detr_tiny_synthetic.py \\
        --input photos/ img.jpg --output out/demo --confidence-threshold 0.4 \\
        train.init_checkpoint=output/focus_detr_tiny_synthetic/model_final.pth

Images are resized like the config's test mapper, detections are drawn on the original image
(`<output>/<name>.png`, same size as the input file). Runs on the CPU by default (`--device auto`
uses the GPU when there is one). Class names come from the config's test dataset metadata.
detectron2's `Visualizer` needs OpenCV (`pip install opencv-python-headless`); without it the
boxes, class names and scores are drawn with PIL instead (a warning says so).
"""

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

from focus_detr.cli import check_overrides, tool_parser  # noqa: E402  (no torch)


def parse_args(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--config-file", required=True, help="LazyConfig file defining `model`")
    p.add_argument("--input", nargs="+", required=True, help="image files or folders")
    p.add_argument("--output", required=True, help="output folder for the PNG files")
    p.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="draw detections scoring at least this (default 0.5)",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto (GPU if any)")
    p.add_argument(
        "--metadata", help="dataset name for class names (default: the config's " "test dataset)"
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides key=value, e.g. train.init_checkpoint=model.pth",
    )
    args = p.parse_args(argv)
    args.opts = check_overrides(p, args.opts)
    if not 0.0 <= args.confidence_threshold <= 1.0:
        p.error(f"--confidence-threshold must be in [0, 1], got {args.confidence_threshold}")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answered before torch and detectron2 load

import torch  # noqa: E402

import focus_detr.data  # noqa: E402,F401  (registers the built-in dataset)
from focus_detr.analysis import build_model, load_config, resolve_device  # noqa: E402
from focus_detr.analysis.model_io import image_file_inputs  # noqa: E402
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


def main(argv=None):
    from detectron2.data.detection_utils import read_image

    args = parse_args(argv)
    device = resolve_device(args.device)
    configure_allocator()  # large CPU tensors reused instead of page-faulted in per image
    cfg = load_config(args.config_file, args.opts)
    model = build_model(cfg, device, cfg.train.get("init_checkpoint", None) or None)
    metadata = _metadata(cfg, args.metadata)
    inputs = image_file_inputs(cfg, args.input)
    use_visualizer = _has_opencv()
    if not use_visualizer:
        logging.getLogger(__name__).warning(
            "OpenCV is not installed (pip install opencv-python-headless): drawing with PIL "
            "instead of detectron2's Visualizer"
        )
    os.makedirs(args.output, exist_ok=True)
    written = []
    for x in inputs:
        start = time.perf_counter()
        with torch.no_grad():
            instances = model([x])[0]["instances"].to("cpu")
        seconds = time.perf_counter() - start
        keep = instances[instances.scores >= args.confidence_threshold]
        image = read_image(x["file_name"], format="RGB")
        stem = Path(x["file_name"]).stem
        path = os.path.join(args.output, stem + ".png")
        n = 1
        while path in written:  # same name in two input folders
            path = os.path.join(args.output, f"{stem}_{n}.png")
            n += 1
        draw_detections(image, keep, metadata, path, use_visualizer)
        written.append(path)
        print(
            f"{x['file_name']}: {len(keep)} detection(s) >= {args.confidence_threshold} "
            f"in {seconds:.2f} s -> {path}"
        )
    return written


if __name__ == "__main__":
    main()
