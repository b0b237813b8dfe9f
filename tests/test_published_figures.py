"""Figures measured outside the project live in one documented data file
(focus_detr/data/published_figures.json), each group with its source; the benchmark reads them
from there instead of holding its own copies."""

import json

from focus_detr.engine import REPO_ROOT

from tools_utils import load_tool

FIGURES = REPO_ROOT / "focus_detr" / "data" / "published_figures.json"


def test_every_group_names_its_source():
    figures = json.loads(FIGURES.read_text())
    assert figures["_about"]
    for group in ("anchors", "backbone_calibration"):
        assert len(figures[group]["_source"]) > 40, group


def test_benchmark_reads_the_figures_from_the_file():
    tool = load_tool("benchmark")
    figures = json.loads(FIGURES.read_text())
    assert tool.PUBLISHED_FIGURES == FIGURES
    assert dict(tool.PUBLISHED_ANCHORS) == figures["anchors"]["models"]
    assert list(tool.PUBLISHED_ANCHORS) == ["dense", "sparse", "focus"]
    assert tool.PUBLISHED_BACKBONE_CPU_S == figures["backbone_calibration"]["cpu_s"] == 0.79
    assert tool.ANCHOR_INPUT_SIZE == (800, 1216)
