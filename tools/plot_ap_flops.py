#!/usr/bin/env python
"""AP against GFLOPs (the paper's Figure 7) from the tools' results file (JSON lines).

    python tools/plot_ap_flops.py --results output/results.jsonl --output ap_vs_gflops.png

Records of one (config, overrides, keep ratio, checkpoint) are merged (e.g. GFLOPs from
analyze_model or benchmark, AP from benchmark --eval/--metrics or the keep-ratio sweep); those
with both AP and GFLOPs are plotted, one line per series (the record's "label" if given, else
its method: dense / sparse / focus), points in GFLOPs order, annotated with the keep ratio.
`--paper` adds the paper's Table 1 points (COCO, R50, 36 epochs) for reference; they sit at
150-280 GFLOPs, so beside small models (e.g. the tiny configs' 0.5 GFLOPs) the GFLOPs axis is
logarithmic by default (`--xscale`), or `--panels` draws them in a panel of their own:

    python tools/plot_ap_flops.py --results output/sweep.jsonl --output ap.png --paper --panels
"""

import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

from focus_detr.cli import filter_known_warnings, tool_parser  # noqa: E402

filter_known_warnings()  # before torch/detectron2 import: their import-time warnings


# paper Table 1 (COCO val, R50, 36 epochs): (label, keep ratio, GFLOPs, AP)
PAPER_POINTS = (
    ("DINO (paper)", 1.0, 279.0, 50.9),
    ("DINO+Sparse DETR (paper)", 0.3, 152.0, 48.2),
    ("Focus-DETR (paper)", 0.3, 154.0, 50.4),
)


LOG_SPAN = 10.0  # GFLOPs ratio above which the auto axis is logarithmic


def parse_args(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--results", nargs="+", required=True, help="results file(s) (JSON lines)")
    p.add_argument("--output", required=True, help="PNG file to write")
    p.add_argument("--title", default="AP vs GFLOPs")
    p.add_argument("--paper", action="store_true", help="add the paper's Table 1 points")
    p.add_argument(
        "--xscale",
        choices=("auto", "linear", "log"),
        default="auto",
        help="GFLOPs axis: auto (default) is log when the points span more than "
        f"{LOG_SPAN}x in GFLOPs, else linear",
    )
    p.add_argument(
        "--panels",
        action="store_true",
        help="with --paper: the paper's points in a second panel (own axes) beside ours",
    )
    p.add_argument(
        "--size",
        type=float,
        nargs=2,
        default=(6.4, 4.8),
        metavar=("W", "H"),
        help="figure size in inches (100 dpi)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answered before torch and detectron2 load

from focus_detr.analysis import load_results, merge_results  # noqa: E402
from focus_detr.analysis.report import markdown_table  # noqa: E402


def choose_xscale(requested: str, gflops) -> str:
    """ "linear" or "log" for the GFLOPs values `gflops` (auto: log when they span > LOG_SPAN)."""
    if requested != "auto":
        return requested
    positive = [g for g in gflops if g > 0]
    if positive and max(positive) / min(positive) > LOG_SPAN:
        return "log"
    return "linear"


def series(records):
    """label -> [(gflops, ap, keep_ratio)] sorted by GFLOPs, from merged records with both."""
    out = OrderedDict()
    for r in records:
        if r.get("gflops") is None or r.get("ap") is None:
            continue
        label = r.get("label") or r.get("method") or Path(r["config"]).stem
        out.setdefault(label, []).append((float(r["gflops"]), float(r["ap"]), r.get("keep_ratio")))
    for points in out.values():
        points.sort()
    return out


def main(argv=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args = parse_args(argv)
    records = merge_results([r for path in args.results for r in load_results(path)])
    lines = series(records)
    if not lines and not args.paper:
        raise SystemExit(
            f"no record in {args.results} has both 'gflops' and 'ap' (run "
            "analyze_model/benchmark for GFLOPs and benchmark --eval/--metrics or the "
            "keep-ratio sweep for AP)"
        )
    panels = args.panels and args.paper and bool(lines)
    fig, axes = plt.subplots(
        1, 2 if panels else 1, figsize=tuple(args.size), dpi=100, squeeze=False
    )
    ours_ax, paper_ax = axes[0][0], axes[0][-1]
    rows = []
    for label, points in lines.items():
        x, y = [p[0] for p in points], [p[1] for p in points]
        ours_ax.plot(x, y, marker="o", label=label)
        for g, a, k in points:
            if k is not None:
                ours_ax.annotate(
                    f"{k:g}", (g, a), textcoords="offset points", xytext=(4, 4), fontsize=8
                )
            rows.append([label, k, g, a])
    if args.paper:
        for label, k, g, a in PAPER_POINTS:
            paper_ax.scatter([g], [a], marker="*", s=120, label=label)
            rows.append([label, k, g, a])
    scales = []
    for ax in {id(a): a for a in (ours_ax, paper_ax)}.values():
        xs = [float(x) for line in ax.get_lines() for x in line.get_xdata()]
        xs += [float(p[0]) for c in ax.collections for p in c.get_offsets()]
        scale = choose_xscale(args.xscale, xs)
        ax.set_xscale(scale)
        scales.append(scale)
        ax.set_xlabel("GFLOPs" + (" (log scale)" if scale == "log" else ""))
        ax.set_ylabel("AP")
        ax.grid(True, alpha=0.3, which="both" if scale == "log" else "major")
        ax.legend(fontsize=8)
    if panels:
        ours_ax.set_title("this run", fontsize=10)
        paper_ax.set_title("paper, Table 1 (COCO, R50)", fontsize=10)
        fig.suptitle(args.title)
    else:
        ours_ax.set_title(args.title)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    plt.close(fig)
    print(markdown_table(["series", "keep", "GFLOPs", "AP"], rows, 2))
    print(f"Wrote {args.output} (GFLOPs axis: {', '.join(scales)})")
    main.scales = scales  # for callers and tests: the axis scale of each panel
    return lines


if __name__ == "__main__":
    main()
