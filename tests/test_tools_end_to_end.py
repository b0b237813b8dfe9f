"""The tools end to end on CPU on the tiny config (random init, small inputs): benchmark,
benchmark_msda, visualize_tokens, demo, plot_ap_flops; and the latency helpers' bookkeeping (no
timing asserts)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from focus_detr.analysis import (
    PartTimer,
    append_result,
    load_results,
    measure_interleaved,
    merge_results,
    paired_ratio,
    read_coco_ap,
    spread,
)
from focus_detr.analysis.drawing import MIN_PANEL, panel_scale
from tests.tools_utils import DINO_TINY, FOCUS_TINY, SMALL_INPUT, SPARSE, TINY_CONFIG, load_tool


def _png_size(path):
    with Image.open(path) as im:
        im.load()  # decodes the whole file
        return im.size


def test_interleaved_rounds_rotate_the_order():
    calls = []
    runners = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    results = measure_interleaved(runners, rounds=3, warmup=1)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(len(r.total) == 3 for r in results.values())
    cpu = measure_interleaved(runners, rounds=2, warmup=0, clock="cpu")
    assert all(len(r.total) == 2 and min(r.total) >= 0 for r in cpu.values())
    with pytest.raises(ValueError, match="clock"):
        measure_interleaved(runners, rounds=1, clock="sundial")


def test_spread_and_paired_ratio():
    s = spread([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s["min"], s["q1"], s["median"], s["q3"], s["max"]) == (1.0, 2.0, 3.0, 4.0, 5.0)
    r = paired_ratio([4.0, 9.0, 2.0], [2.0, 3.0, 2.0])  # per round 2, 3, 1
    assert r["median"] == 2.0 and r["min"] == 1.0 and r["max"] == 3.0
    with pytest.raises(ValueError, match="length"):
        paired_ratio([1.0], [1.0, 2.0])


def test_part_timer_records_each_part_once_per_call():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Linear(4, 4)
            self.neck = nn.Linear(4, 4)

        def forward(self, x):
            return self.neck(self.backbone(self.backbone(x)))  # backbone runs twice

    model = Toy()
    timer = PartTimer(
        model, {"backbone": "backbone", "neck": "neck", "absent": "nothing"}, torch.device("cpu")
    )
    assert list(timer.modules) == ["backbone", "neck"]
    results = measure_interleaved(
        {"toy": lambda: model(torch.ones(1, 4))}, rounds=2, timers={"toy": timer}
    )
    r = results["toy"]
    assert set(r.parts) == {"backbone", "neck"} and all(len(v) == 2 for v in r.parts.values())
    for i, total in enumerate(r.total):
        assert 0 <= r.parts["backbone"][i] + r.parts["neck"][i] <= total
    assert not model._forward_hooks and not model.backbone._forward_pre_hooks  # hooks removed


def test_part_timer_families_and_nested_parts():
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    timer = PartTimer(
        model,
        {"backbone": "backbone", "linears": ["backbone.0", "backbone.2", "backbone.9"]},
        torch.device("cpu"),
        nested=["linears"],
    )
    assert [len(m) for m in timer.modules.values()] == [1, 2]  # the missing path is skipped
    r = measure_interleaved(
        {"toy": lambda: model.backbone(torch.ones(1, 4))}, rounds=3, timers={"toy": timer}
    )["toy"]
    assert list(r.part_medians()) == ["backbone", "rest"]  # nested parts are not in the rest
    assert list(r.part_medians(nested=True)) == ["linears"]
    for outer, inner in zip(r.parts["backbone"], r.parts["linears"]):
        assert 0 <= inner <= outer  # both linears run inside the backbone call


def test_results_file_round_trip_and_merge(tmp_path):
    path = tmp_path / "sub" / "results.jsonl"
    append_result(path, {"config": "a.py", "keep_ratio": 0.3, "gflops": 10.0})
    append_result(path, {"config": "a.py", "keep_ratio": 0.3, "ap": 40.0, "gflops": None})
    append_result(path, {"config": "a.py", "keep_ratio": 0.2, "gflops": 8.0})
    records = load_results(path)
    assert len(records) == 3 and all("time" in r for r in records)
    merged = merge_results(records)
    assert [(m["keep_ratio"], m.get("gflops"), m.get("ap")) for m in merged] == [
        (0.3, 10.0, 40.0),
        (0.2, 8.0, None),
    ]
    with pytest.raises(ValueError, match="config"):
        append_result(path, {"gflops": 1.0})
    append_result(path, {"config": "b.py", "ap": float("nan")})  # JSON has no NaN: null
    assert '"ap": null' in path.read_text().splitlines()[-1]
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    path.write_text(path.read_text() + "not json\n")
    with pytest.raises(ValueError, match="results.jsonl:4"):
        load_results(path)


def test_read_coco_ap_from_metrics_and_results_files(tmp_path):
    metrics = tmp_path / "metrics.json"  # detectron2's JSON lines: the last bbox/AP wins
    metrics.write_text(
        '{"iteration": 9, "total_loss": 1.0}\n{"bbox/AP": 12.5, "iteration": 10}\n'
        '{"iteration": 19}\n{"bbox/AP": 20.25, "iteration": 20}\n'
    )
    assert read_coco_ap(str(metrics)) == 20.25
    results = tmp_path / "results.json"  # an evaluation results dict
    results.write_text('{"bbox": {"AP": 33.0, "AP50": 50.0}}')
    assert read_coco_ap(str(results)) == 33.0
    assert read_coco_ap(str(results), "bbox/AP50") == 50.0
    assert read_coco_ap(str(metrics), "segm/AP") is None
    with pytest.raises(FileNotFoundError):
        read_coco_ap(str(tmp_path / "missing.json"))


def test_benchmark_side_by_side(tmp_path, capsys):
    tool = load_tool("benchmark")
    results, summary_json = tmp_path / "results.jsonl", tmp_path / "bench.json"
    summary = tool.main(
        [
            "--config-file",
            DINO_TINY,
            "--config-file",
            FOCUS_TINY,
            "model.transformer.encoder.selector.keep_ratio=0.2",
            "--labels",
            "dense",
            "focus",
            "--input-size",
            *map(str, SMALL_INPUT),
            "--runs",
            "2",
            "--warmup",
            "1",
            "--device",
            "cpu",
            "--results",
            str(results),
            "--json",
            str(summary_json),
            "--detail",
        ]
    )
    printed = capsys.readouterr().out
    assert "2 thread(s)" in printed  # the CPU default
    assert "Breakdown by part" in printed and "speed-up" in printed
    assert "Published anchors" not in printed  # only at the anchors' input size
    assert list(summary) == ["dense", "focus"]
    assert summary["dense"]["speedup_vs_first"]["median"] == 1.0
    assert summary["focus"]["gflops"] < summary["dense"]["gflops"]
    raw = json.loads(summary_json.read_text())
    assert all(len(raw["raw_seconds"][k]) == 2 for k in ("dense", "focus"))
    assert {"backbone", "neck", "encoder", "decoder"} <= set(raw["raw_parts"]["focus"])
    detail = summary["focus"]["detail_s"]  # submodule families, e.g. the selector, FFNs
    assert {"encoder.selector", "encoder.layers.*.ffns.0", "decoder.layers.*.attentions.1"} <= set(
        detail
    )
    assert "Encoder/decoder detail" in printed
    records = load_results(results)
    assert [r["method"] for r in records] == ["dense", "focus"]
    assert records[1]["fps"] == pytest.approx(1.0 / summary["focus"]["seconds"]["median"])
    assert records[1]["overrides"] == ["model.transformer.encoder.selector.keep_ratio=0.2"]
    assert records[1]["keep_ratio"] == pytest.approx(0.2)


def test_benchmark_anchor_rows():
    """The anchor table's ratios and calibration scaling, on a made-up summary and anchors."""
    tool = load_tool("benchmark")
    anchors = {
        "focus": dict(name="F", cpu_s=2.10, gflops=160.0, paper_gflops=150.0),
        "sparse": dict(name="S", cpu_s=None, gflops=None, paper_gflops=140.0),  # time unpublished
    }

    def ours(method, seconds, gflops):
        return dict(
            info={"method": method},
            seconds={"median": seconds},
            parts_s={"backbone": 0.4},
            gflops=gflops,
        )

    summary = {
        "mine": ours("focus", 1.05, 80.0),
        "other": ours("sparse", 0.5, 70.0),
        "plain": ours("custom", 1.0, 90.0),
    }  # no anchor for this method: no row
    mine, other = tool.anchor_rows(summary, factor=1.5, anchors=anchors)
    assert (mine["config"], mine["published model"], other["config"]) == ("mine", "F", "other")
    assert mine["published/ours"] == pytest.approx(2.00)  # 2.10 s / 1.05 s
    assert mine["published s, scaled"] == pytest.approx(3.15)  # 2.10 s x 1.5
    assert mine["scaled/ours"] == pytest.approx(3.00)  # 3.15 s / 1.05 s
    assert (mine["ours s"], mine["ours backbone s"], mine["ours GFLOPs"]) == (1.05, 0.4, 80.0)
    assert other["published/ours"] is None and other["published s, scaled"] is None
    assert other["scaled/ours"] is None
    uncalibrated, _ = tool.anchor_rows(summary, anchors=anchors)
    assert uncalibrated["published/ours"] == pytest.approx(2.00)
    assert uncalibrated["published s, scaled"] is None and uncalibrated["scaled/ours"] is None


def test_benchmark_calibrates_against_the_published_backbone(tmp_path, capsys):
    """--calibrate times detectron2's ResNet-50 exactly as the published R50 configs build it
    (frozen batch norms, not folded) and scales the anchors by its time over the anchors' 0.79 s."""
    from detectron2.layers import FrozenBatchNorm2d
    from detectron2.modeling.backbone import ResNet

    tool = load_tool("benchmark")
    _, backbone = tool.calibration_runner(torch.device("cpu"))
    assert type(backbone) is ResNet and not backbone.training
    norms = [m for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 53  # the stem's and every block's: none folded into its convolution
    assert {k: v.channels for k, v in backbone.output_shape().items()} == {
        "res3": 512,
        "res4": 1024,
        "res5": 2048,
    }

    bench_json = tmp_path / "bench.json"
    summary = tool.main(
        [
            "--config-file",
            FOCUS_TINY,
            "--labels",
            "focus",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--device",
            "cpu",
            "--no-flops",
            "--no-breakdown",
            "--calibrate",
            "--json",
            str(bench_json),
        ]
    )
    printed = capsys.readouterr().out
    calibration = json.loads(bench_json.read_text())["calibration"]
    assert calibration["factor"] == pytest.approx(calibration["seconds"]["median"] / 0.79)
    assert f"{calibration['factor']:.2f}x the anchors' time" in printed
    # at the anchors' input size the anchor table adds the scaled published time
    assert summary["focus"]["published_s_scaled"] == pytest.approx(2.10 * calibration["factor"])
    assert "published s, scaled" in printed
    threads = torch.get_num_threads()
    with pytest.raises(
        SystemExit, match="anchors' setting .CPU, 2 threads, wall clock.; this run: cpu, 1 thread"
    ):
        tool.main(["--config-file", FOCUS_TINY, "--device", "cpu", "--threads", "1", "--calibrate"])
    assert torch.get_num_threads() == threads  # refused before touching the thread pool


def test_benchmark_msda_table(capsys, monkeypatch):
    """One row per (dtype, available backend) of the decoder shape; speed-ups over pytorch."""
    from focus_detr.layers.ms_deform_attn import available_backends

    monkeypatch.setenv("KINETO_LOG_LEVEL", "5")  # the tool sets it when unset
    tool = load_tool("benchmark_msda")
    tool.main(
        [
            "--device",
            "cpu",
            "--shapes",
            "decoder",
            "--dtype",
            "float32,float64",
            "--repeat",
            "1",
            "--warmup",
            "0",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in lines[1].strip("|").split("|")]
    rows = [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        for line in lines
        if line.startswith("| decoder |")
    ]
    backends = available_backends(torch.device("cpu"))
    assert "pytorch" in backends
    assert [(r["dtype"], r["backend"]) for r in rows] == [
        (d, b) for d in ("float32", "float64") for b in backends
    ]
    assert all(r["queries"] == "900" for r in rows)
    for dtype in ("float32", "float64"):
        base = next(r for r in rows if r["dtype"] == dtype and r["backend"] == "pytorch")
        for r in (r for r in rows if r["dtype"] == dtype):
            assert float(r["fwd ms"]) > 0 and float(r["fwd+bwd ms"]) > 0
            assert float(r["peak MiB"]) >= 0
            for time, speedup in (("fwd ms", "fwd speedup"), ("fwd+bwd ms", "fwd+bwd speedup")):
                expected = float(base[time]) / float(r[time])  # from the rounded times
                assert float(r[speedup].rstrip("x")) == pytest.approx(expected, rel=0.02, abs=0.01)


def test_sweep_keep_ratio_costs(capsys):
    """Cost columns only (no training): FLOPs fall with the keep ratio, every row is timed."""
    tool = load_tool("sweep_keep_ratio")
    threads = torch.get_num_threads()
    try:
        rows = tool.main(
            [
                "--config-file",
                TINY_CONFIG,
                "--encoders",
                "dense",
                "focus",
                "sparse",
                "--keep-ratios",
                "0.2",
                "0.5",
                "--image-size",
                *map(str, SMALL_INPUT),
                "--warmup",
                "0",
                "--repeats",
                "2",
                "--device",
                "cpu",
                "--threads",
                "1",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert [(r["encoder"], r["keep_ratio"]) for r in rows] == [
        ("dense", None),
        ("focus", 0.2),
        ("focus", 0.5),
        ("sparse", 0.2),
        ("sparse", 0.5),
    ]
    assert all(r["latency_s"] > 0 and r["params_m"] > 0 for r in rows)
    dense, focus_low, focus_high, sparse_low, sparse_high = (r["gflops_encoder"] for r in rows)
    assert focus_low < focus_high < dense and sparse_low < sparse_high < dense
    assert "latency (s)" in capsys.readouterr().out


def test_sweep_evaluates_given_weights_as_they_are(tmp_path):
    """--checkpoint weights are evaluated untrained even with --train-iters, and must fit: the
    dense model's weights given for focus@0.5 fail, naming the file."""
    from focus_detr.modeling import CheckpointMismatchError

    tool = load_tool("sweep_keep_ratio")
    paths = {}
    for encoder, ratio in (("focus", 0.5), ("dense", None)):
        model = tool.build_model(tool.load_config(TINY_CONFIG, encoder, ratio), "cpu", 0)
        paths[encoder] = tmp_path / f"{encoder}.pth"
        torch.save({"model": model.state_dict()}, paths[encoder])
    common = [
        "--config-file",
        TINY_CONFIG,
        "--encoders",
        "focus",
        "--keep-ratios",
        "0.5",
        "--no-flops",
        "--no-latency",
        "--eval-images",
        "2",
        "--device",
        "cpu",
        "--train-iters",
        "2",
        "--image-size",
        *map(str, SMALL_INPUT),
    ]
    (row,) = tool.main(common + ["--checkpoint", f"focus@0.5={paths['focus']}"])
    assert 0.0 <= row["AP"] <= 100.0
    assert not any("loss" in key for key in row)  # not trained
    with pytest.raises(CheckpointMismatchError, match="dense.pth does not fit"):
        tool.main(common + ["--checkpoint", f"focus@0.5={paths['dense']}"])


def test_visualize_tokens_with_comparison(tmp_path, capsys):
    tool = load_tool("visualize_tokens")
    out = tmp_path / "tokens"
    written = tool.main(
        [
            "--config-file",
            FOCUS_TINY,
            "--compare-config",
            TINY_CONFIG,
            SPARSE,
            "--dataset-samples",
            "1",
            "--output",
            str(out),
        ]
    )
    names = sorted(p.split("/")[-1] for p in written)
    assert len(names) == 4 and names[-1] == "selection_metrics.json"
    levels = next(p for p in written if p.endswith("_levels.png"))
    text = (out / "selection_metrics.json").read_text()
    assert "NaN" not in text  # not JSON: undefined ratios are null with a reason
    metrics = json.loads(text)
    for group in metrics["overall"].values():
        nulls = {k for k, v in group.items() if v is None}
        assert nulls == set(group.get("undefined", {})), group
    h, w = metrics["images"][0]["input_size"]
    scale = panel_scale(h, w)
    assert w * scale >= MIN_PANEL  # panels enlarged to a readable size
    # levels: kept / ground truth / agreement rows x 4 levels (captions, title, legend extra)
    width, height = _png_size(levels)
    assert width == 4 * w * scale and height > 3 * h * scale
    layers = next(p for p in written if p.endswith("_layers.png"))
    width, height = _png_size(layers)  # kept and object tokens x 2 layers
    assert width == 2 * w * scale and height > 2 * h * scale
    compare = next(p for p in written if p.endswith("_compare.png"))
    width, height = _png_size(compare)  # ground truth, sparse, focus
    assert width == 3 * w * scale and h * scale < height < 2 * h * scale
    image = metrics["images"][0]
    for key in ("layer0", "layer1", "object0", "object1"):
        assert 0.0 <= image["selection"][key]["keep_fraction"] <= 1.0
    assert image["selection"]["layer0"]["keep_fraction"] == pytest.approx(0.4, abs=0.01)
    compare = image["compare"]
    assert (compare["compare_config"]["method"], compare["config"]["method"]) == ("sparse", "focus")
    assert compare["config"]["recall"] == pytest.approx(image["selection"]["layer0"]["recall"])
    assert "precision" in capsys.readouterr().out


def test_visualize_tokens_compares_two_models_of_one_method(tmp_path):
    """Two Focus-DETR models (keep ratio 0.3 and 0.15): each keeps its own metrics entry."""
    tool = load_tool("visualize_tokens")
    out = tmp_path / "tokens"
    tool.main(
        [
            "--config-file",
            FOCUS_TINY,
            "--compare-config",
            FOCUS_TINY,
            "model.transformer.encoder.selector.keep_ratio=0.15",
            "--dataset-samples",
            "1",
            "--output",
            str(out),
        ]
    )
    compare = json.loads((out / "selection_metrics.json").read_text())["images"][0]["compare"]
    assert compare["config"]["method"] == compare["compare_config"]["method"] == "focus"
    # the first layer keeps 4/3 of the keep ratio (cascade 1.0, 0.5)
    assert compare["config"]["keep_fraction"] == pytest.approx(0.4, abs=0.01)
    assert compare["compare_config"]["keep_fraction"] == pytest.approx(0.2, abs=0.01)


def test_visualize_tokens_rejects_a_dense_model(tmp_path):
    tool = load_tool("visualize_tokens")
    with pytest.raises(SystemExit, match="keeps every token"):
        tool.main(["--config-file", DINO_TINY, "--dataset-samples", "1", "--output", str(tmp_path)])


@pytest.mark.parametrize("visualizer", [True, False], ids=["detectron2-visualizer", "pil"])
def test_demo_writes_detections_at_the_input_size(tmp_path, monkeypatch, visualizer):
    tool = load_tool("demo")
    if visualizer:
        assert tool._has_opencv(), "opencv-python-headless is a requirement (setup.py)"
    else:
        monkeypatch.setattr(tool, "_has_opencv", lambda: False)
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (70, 50, 3), dtype=np.uint8)).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    written = tool.main(
        [
            "--config-file",
            FOCUS_TINY,
            "--input",
            str(folder),
            "--output",
            str(tmp_path / "out"),
            "--confidence-threshold",
            "0.0",
        ]
    )
    assert [p.split("/")[-1] for p in written] == ["a.png", "b.png"]
    assert _png_size(written[0]) == (120, 90) and _png_size(written[1]) == (50, 70)
    with pytest.raises(SystemExit):
        tool.main(
            [
                "--config-file",
                FOCUS_TINY,
                "--input",
                str(folder),
                "--output",
                str(tmp_path),
                "--confidence-threshold",
                "2",
            ]
        )
    with pytest.raises(FileNotFoundError, match="input not found"):
        tool.main(
            [
                "--config-file",
                FOCUS_TINY,
                "--input",
                str(tmp_path / "nope.jpg"),
                "--output",
                str(tmp_path),
            ]
        )


def test_plot_ap_flops(tmp_path, capsys):
    tool = load_tool("plot_ap_flops")
    results = tmp_path / "results.jsonl"
    for method, ratio, gflops, ap in (
        ("focus", 0.3, 1.0, 30.0),
        ("focus", 0.5, 1.2, 33.0),
        ("sparse", 0.3, 0.9, 25.0),
        ("dense", 1.0, 1.5, 35.0),
    ):
        append_result(
            results,
            {"config": f"{method}.py", "method": method, "keep_ratio": ratio, "gflops": gflops},
        )
        append_result(
            results, {"config": f"{method}.py", "method": method, "keep_ratio": ratio, "ap": ap}
        )
    append_result(results, {"config": "other.py", "gflops": 2.0})  # no AP: not plotted
    out = tmp_path / "fig.png"
    lines = tool.main(["--results", str(results), "--output", str(out), "--paper"])
    assert lines["focus"] == [(1.0, 30.0, 0.3), (1.2, 33.0, 0.5)]
    assert set(lines) == {"focus", "sparse", "dense"}
    assert _png_size(out) == (640, 480)
    empty = tmp_path / "empty.jsonl"
    append_result(empty, {"config": "x.py", "gflops": 1.0})
    with pytest.raises(SystemExit, match="both 'gflops' and 'ap'"):
        tool.main(["--results", str(empty), "--output", str(out)])
