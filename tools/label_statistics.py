#!/usr/bin/env python
"""Ground-truth foreground tokens per feature level that Focus-DETR's label assignment gives a
config's test images, for one or more scalings of the published scale ranges
(`ForegroundLabelAssigner(range_scale=...)`): whether every level gets foreground at the
images' size.

    python tools/label_statistics.py --config-file projects/focus_detr/configs/focus_detr_tiny_synthetic.py \\
        --range-scales 0.35 0.4 1.0 --images 200

Prints, per range scale, each level's foreground token count and its share of the level's
tokens (images resized by the config's test mapper).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

from focus_detr.cli import check_overrides, filter_known_warnings, tool_parser  # noqa: E402

filter_known_warnings()  # before torch/detectron2 import: their import-time warnings


def parse_args(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--config-file", required=True, help="LazyConfig with `dataloader.test`")
    p.add_argument(
        "--range-scales",
        type=float,
        nargs="+",
        default=[1.0],
        help="factors on the published scale ranges (default 1: published)",
    )
    p.add_argument("--images", type=int, default=200, help="test images counted (default 200)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = p.parse_args(argv)
    args.opts = check_overrides(p, args.opts)
    if args.images <= 0:
        p.error(f"--images must be positive, got {args.images}")
    bad = [r for r in args.range_scales if not r > 0]
    if bad:
        p.error(f"--range-scales must be positive, got {bad}")
    return args


def main(argv=None):
    args = parse_args(argv)
    from focus_detr.analysis import dataset_inputs, load_config
    from focus_detr.evaluation import foreground_per_level
    from focus_detr.modeling.focus import ForegroundLabelAssigner

    inputs = dataset_inputs(
        load_config(args.config_file, args.opts), args.images, with_annotations=True
    )
    images = [(x["image"].shape[-2:], x["instances"].gt_boxes.tensor) for x in inputs]
    print(f"{len(images)} test images of {args.config_file}")
    print("range scale | scale ranges | foreground tokens per level (share of the level's tokens)")
    for scale in args.range_scales:
        assigner = ForegroundLabelAssigner(range_scale=scale)
        counts = foreground_per_level(images, assigner)
        levels = ", ".join(
            f"{f} ({100.0 * f / t:.1f}%)" for f, t in zip(counts["foreground"], counts["tokens"])
        )
        ranges = " ".join(f"({lo:g}, {hi:g}]" for lo, hi in assigner.scale_ranges)
        print(f"{scale:g} | {ranges} | {levels}")


if __name__ == "__main__":
    main()
