#!/usr/bin/env python
"""Detections on image files or folders, drawn with detectron2's `Visualizer`, as PNG files.

    python tools/demo.py --config-file projects/focus_detr/configs/focus_detr_tiny_synthetic.py \\
        --input photos/ img.jpg --output out/demo --confidence-threshold 0.4 \\
        train.init_checkpoint=output/focus_detr_tiny_synthetic/model_final.pth

Images are resized like the config's test mapper, detections are drawn on the original image
(`<output>/<name>.png`, same size as the input file). Runs on the CPU by default (`--device auto`
uses the GPU when there is one). Class names come from the config's test dataset metadata.
"""
import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

import torch  # noqa: E402

import focus_detr.data  # noqa: E402,F401  (registers the built-in dataset)
from focus_detr.analysis import build_model, load_config, resolve_device  # noqa: E402
from focus_detr.analysis.model_io import image_file_inputs  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="LazyConfig file defining `model`")
    p.add_argument("--input", nargs="+", required=True, help="image files or folders")
    p.add_argument("--output", required=True, help="output folder for the PNG files")
    p.add_argument("--confidence-threshold", type=float, default=0.5,
                   help="draw detections scoring at least this (default 0.5)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto (GPU if any)")
    p.add_argument("--metadata", help="dataset name for class names (default: the config's "
                                      "test dataset)")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="config overrides key=value, e.g. train.init_checkpoint=model.pth")
    args = p.parse_args(argv)
    if not 0.0 <= args.confidence_threshold <= 1.0:
        p.error(f"--confidence-threshold must be in [0, 1], got {args.confidence_threshold}")
    return args


def _metadata(cfg, name):
    from detectron2.data import MetadataCatalog

    if name is None and "dataloader" in cfg and "test" in cfg.dataloader:
        names = cfg.dataloader.test.dataset.get("names")
        name = names if isinstance(names, str) else (names[0] if names else None)
    return MetadataCatalog.get(name) if name else MetadataCatalog.get("__unused")


def main(argv=None):
    from detectron2.data.detection_utils import read_image
    from detectron2.utils.visualizer import Visualizer

    args = parse_args(argv)
    device = resolve_device(args.device)
    cfg = load_config(args.config_file, args.opts)
    model = build_model(cfg, device, cfg.train.get("init_checkpoint", None) or None)
    metadata = _metadata(cfg, args.metadata)
    inputs = image_file_inputs(cfg, args.input)
    os.makedirs(args.output, exist_ok=True)
    written = []
    for x in inputs:
        start = time.perf_counter()
        with torch.no_grad():
            instances = model([x])[0]["instances"].to("cpu")
        seconds = time.perf_counter() - start
        keep = instances[instances.scores >= args.confidence_threshold]
        image = read_image(x["file_name"], format="RGB")
        vis = Visualizer(image, metadata, scale=1.0).draw_instance_predictions(keep)
        stem = Path(x["file_name"]).stem
        path = os.path.join(args.output, stem + ".png")
        n = 1
        while path in written:  # same name in two input folders
            path = os.path.join(args.output, f"{stem}_{n}.png")
            n += 1
        vis.save(path)
        written.append(path)
        print(f"{x['file_name']}: {len(keep)} detection(s) >= {args.confidence_threshold} "
              f"in {seconds:.2f} s -> {path}")
    return written


if __name__ == "__main__":
    main()
