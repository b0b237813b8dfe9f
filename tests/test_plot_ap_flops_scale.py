"""plot_ap_flops.py: the paper's 150-280 GFLOPs points beside a tiny model's 0.5 get a log
GFLOPs axis (auto), or a panel of their own (--panels)."""

from PIL import Image

from focus_detr.analysis import append_result
from tests.tools_utils import load_tool


def _tiny_results(path):
    for ratio, gflops, ap in ((0.3, 0.45, 10.0), (0.5, 0.5, 11.0)):
        append_result(
            path,
            {
                "config": "tiny.py",
                "method": "focus",
                "keep_ratio": ratio,
                "gflops": gflops,
                "ap": ap,
            },
        )


def test_paper_points_beside_tiny_models(tmp_path, capsys):
    tool = load_tool("plot_ap_flops")
    results = tmp_path / "results.jsonl"
    _tiny_results(results)
    out = tmp_path / "log.png"
    tool.main(["--results", str(results), "--output", str(out), "--paper"])
    assert tool.main.scales == ["log"]
    assert "GFLOPs axis: log" in capsys.readouterr().out
    tool.main(["--results", str(results), "--output", str(out), "--paper", "--xscale", "linear"])
    assert tool.main.scales == ["linear"]
    panels = tmp_path / "panels.png"
    tool.main(
        [
            "--results",
            str(results),
            "--output",
            str(panels),
            "--paper",
            "--panels",
            "--size",
            "10",
            "4",
        ]
    )
    assert tool.main.scales == ["linear", "linear"]  # each panel spans little
    with Image.open(panels) as im:
        assert im.size == (1000, 400)
    tool.main(["--results", str(results), "--output", str(out)])  # no paper: one close range
    assert tool.main.scales == ["linear"]
    assert tool.choose_xscale("auto", [0.45, 279.0]) == "log"
