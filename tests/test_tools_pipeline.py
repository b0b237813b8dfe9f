"""The keep-ratio sweep's results records are what plot_ap_flops.py reads: sweep -> plot end to
end on the tiny config (one training iteration, one evaluation image, no latency)."""

import json

import pytest
from PIL import Image

from tests.tools_utils import SMALL_INPUT, TINY_CONFIG, load_tool


def test_sweep_results_feed_the_ap_flops_plot(tmp_path, capsys):
    results = tmp_path / "sweep.jsonl"
    sweep = load_tool("sweep_keep_ratio")
    rows = sweep.main(
        [
            "--config-file",
            TINY_CONFIG,
            "--encoders",
            "dense",
            "focus",
            "--keep-ratios",
            "0.3",
            "0.5",
            "--train-iters",
            "1",
            "--eval-images",
            "1",
            "--no-latency",
            "--device",
            "cpu",
            "--image-size",
            *map(str, SMALL_INPUT),
            "--results",
            str(results),
            "--output",
            str(tmp_path / "rows.json"),
        ]
    )
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["method"], r.get("keep_ratio")) for r in records] == [
        ("dense", None),
        ("focus", 0.3),
        ("focus", 0.5),
    ]
    for row, record in zip(rows, records):
        assert record["gflops"] == pytest.approx(row["gflops"])
        assert record["ap"] == pytest.approx(row["AP"])
        assert record["config"] == TINY_CONFIG and record["tool"] == "sweep_keep_ratio"
    assert "Appended 3 record(s)" in capsys.readouterr().out
    # COCO's NaN (no box of a size among the evaluated images) is null with its reason
    text = (tmp_path / "rows.json").read_text()
    assert "NaN" not in text and "NaN" not in results.read_text()
    for row in json.loads(text):
        nulls = {k for k, v in row.items() if v is None and k != "keep_ratio"}
        assert nulls == set(row.get("undefined", {})), row

    plot = load_tool("plot_ap_flops")
    figure = tmp_path / "ap_vs_gflops.png"
    lines = plot.main(["--results", str(results), "--output", str(figure)])
    assert set(lines) == {"dense", "focus"}
    assert [k for _, _, k in lines["focus"]] == [0.3, 0.5]  # in GFLOPs order
    with Image.open(figure) as im:
        assert im.size[0] > 0

    # the sweep's --output rows are not a results file: the error says which option writes one
    with pytest.raises(ValueError, match="writes results records with --results FILE"):
        plot.main(["--results", str(tmp_path / "rows.json"), "--output", str(figure)])
