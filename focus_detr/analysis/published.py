"""Figures measured outside this project (the published code's CPU times, the paper's table),
read from `focus_detr/data/published_figures.json`, where each group names its source. Standard
library only, so a tool can read them while parsing its arguments (`focus_detr.cli.standalone_module`)."""

import json
from collections import OrderedDict
from pathlib import Path

__all__ = [
    "ANCHOR_COLUMNS",
    "ANCHOR_INPUT_SIZE",
    "PUBLISHED_ANCHORS",
    "PUBLISHED_BACKBONE_CPU_S",
    "PUBLISHED_FIGURES",
]

PUBLISHED_FIGURES = Path(__file__).resolve().parents[1] / "data" / "published_figures.json"
_figures = json.loads(PUBLISHED_FIGURES.read_text())
PUBLISHED_ANCHORS = OrderedDict(_figures["anchors"]["models"])
PUBLISHED_BACKBONE_CPU_S = _figures["backbone_calibration"]["cpu_s"]
ANCHOR_INPUT_SIZE = tuple(_figures["anchors"]["input_size"])
ANCHOR_COLUMNS = [
    "config",
    "published model",
    "published s",
    "ours s",
    "published/ours",
    "published s, scaled",
    "scaled/ours",
    "published backbone s",
    "ours backbone s",
    "published GFLOPs (fvcore)",
    "ours GFLOPs",
    "paper GFLOPs",
]
