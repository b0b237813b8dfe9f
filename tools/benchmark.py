#!/usr/bin/env python
"""Inference speed of detectors, with the encoder/decoder breakdown of the paper's Figure 2.

One config, or several side by side in one process (interleaved rounds, rotating order; the
ratios are medians of per-round ratios, so comparisons hold on a noisy machine):

    python tools/benchmark.py --config-file projects/dino/configs/models/dino_r50.py \\
        --config-file projects/focus_detr/configs/models/focus_detr_r50.py \\
        --input-size 800 1216 --threads 2 --runs 10

Each `--config-file PATH [key=value ...]` takes its own overrides (e.g.
`train.init_checkpoint=model.pth` or `model.transformer.encoder.selector.keep_ratio=0.2`).
Batch 1; `--warmup` untimed rounds, then `--runs` timed rounds; median seconds per image with
quartiles and min/max; on CUDA every clock reading is synchronized. The part breakdown times
`backbone`, `neck`, `transformer.encoder`, `transformer.decoder` (forward hooks), "rest" is the
remainder (two-stage heads, query selection, pre/post-processing). GFLOPs by part come from
`focus_detr.analysis.flops` (fvcore, one image). On CPU the default is 2 threads, the setting
of the published anchors printed beside our numbers. The models are built with their inference
transforms (`focus_detr.modeling.optimize`: the backbone's frozen batch norms folded, the
default); the override `model.fold_backbone_norms=False` times the unfolded backbone, as the
published code runs it.

The anchors were measured on another machine (or day): `--calibrate` also times, in the same
rounds, the published R50 models' own backbone code (detectron2's ResNet-50 from the DINO-R50
config, frozen batch norms unfolded) at 800x1216, whose anchor is 0.79 s; the ratio says how this
machine compares, and the anchor table adds the published times scaled by it.
"""

import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # this checkout's focus_detr

from focus_detr.cli import filter_known_warnings, standalone_module, tool_parser  # noqa: E402

filter_known_warnings()  # before torch/detectron2 import: their import-time warnings

_allocator = standalone_module("focus_detr.engine.allocator")
ALLOCATOR_ENV_VAR, ALLOCATOR_SETTINGS = _allocator.ALLOCATOR_ENV_VAR, _allocator.ALLOCATOR_SETTINGS

# Figures measured outside this project (the published code's CPU times, the paper's table),
# each with its source, in one data file
PUBLISHED_FIGURES = REPO_ROOT / "focus_detr" / "data" / "published_figures.json"
_figures = json.loads(PUBLISHED_FIGURES.read_text())
PUBLISHED_ANCHORS = OrderedDict(_figures["anchors"]["models"])
PUBLISHED_BACKBONE_CPU_S = _figures["backbone_calibration"]["cpu_s"]
ANCHOR_INPUT_SIZE = tuple(_figures["anchors"]["input_size"])
# The published R50 models' backbone: detectron2's ResNet-50 with frozen batch norms, the same
# code the published code runs. Timed unfolded (as the published code runs it) by --calibrate.
CALIBRATION_CONFIG = REPO_ROOT / "projects" / "dino" / "configs" / "models" / "dino_r50.py"
CALIBRATION_LABEL = "published backbone"
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


def parse_args(argv=None):
    p = tool_parser(__doc__)
    p.add_argument(
        "--config-file",
        action="append",
        nargs="+",
        required=True,
        metavar="PATH [key=value ...]",
        help="a config and its overrides; repeat to compare configs side by side",
    )
    p.add_argument("--labels", nargs="+", help="a name per config (default: file name)")
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=list(ANCHOR_INPUT_SIZE),
        help="synthesized input image size (default 800 1216, the anchors' size)",
    )
    p.add_argument(
        "--dataset-inputs",
        type=int,
        default=None,
        metavar="N",
        help="cycle through the first N (>= 1) test images of each config instead",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 2 on CPU, as the published anchors)",
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--runs", type=int, default=10, help="timed rounds (runs per config)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time (default) or this process's CPU time (steadier on a shared "
        "machine; CPU-seconds summed over threads incl. OpenMP spin-waits: not a latency, "
        "biased against many-small-op models; see focus_detr.analysis.latency)",
    )
    p.add_argument("--no-flops", action="store_true", help="skip the GFLOPs count")
    p.add_argument(
        "--malloc",
        choices=ALLOCATOR_SETTINGS,
        default=None,
        help="retain: glibc keeps freed memory for reuse instead of page-faulting large tensors "
        "in again (focus_detr.engine.allocator); system: the C library's defaults "
        f"(default: ${ALLOCATOR_ENV_VAR}, else retain)",
    )
    p.add_argument(
        "--msda-backend",
        help="deformable-attention backend for every model "
        "(sets $FOCUS_DETR_MSDA_BACKEND: pytorch = the published code's path, native, ext, "
        "triton, detrex; default auto)",
    )
    p.add_argument(
        "--detail",
        action="store_true",
        help="also time the encoder's and decoder's submodules (summed over layers)",
    )
    p.add_argument(
        "--no-breakdown", action="store_true", help="time whole inferences only (no part hooks)"
    )
    p.add_argument(
        "--eval",
        action="store_true",
        help="also evaluate each config on its test set (COCO AP, token selection)",
    )
    p.add_argument(
        "--metrics",
        nargs="+",
        metavar="FILE",
        help="per config: a detectron2 metrics.json (or results JSON) to read bbox/AP "
        "from, for the results file (instead of --eval)",
    )
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="K",
        help="profile one inference per config with torch.profiler; print the top K "
        "ops by self time",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="also time the published code's own backbone (detectron2's ResNet-50, frozen batch "
        "norms unfolded) on one 800x1216 image in the same rounds; its ratio to the anchors' "
        f"{PUBLISHED_BACKBONE_CPU_S} s says how this machine compares with the anchors' one",
    )
    p.add_argument("--results", help="append one JSON line per config (fps, latency, gflops, ap)")
    p.add_argument("--json", help="write the full measurements to this JSON file")
    args = p.parse_args(argv)
    if args.labels and len(args.labels) != len(args.config_file):
        p.error(f"{len(args.labels)} labels for {len(args.config_file)} configs")
    if args.metrics and len(args.metrics) != len(args.config_file):
        p.error(f"{len(args.metrics)} metrics files for {len(args.config_file)} configs")
    if args.metrics and args.eval:  # both give each config's AP
        p.error("--eval and --metrics both give the AP: use one")
    args.metrics_ap = []  # read now: a missing or malformed file fails before the timing rounds
    read_coco_ap = standalone_module("focus_detr.analysis.results").read_coco_ap
    for path in args.metrics or ():
        try:
            args.metrics_ap.append(read_coco_ap(path))
        except (OSError, ValueError) as e:
            p.error(f"--metrics {path}: {e}")
    if args.runs <= 0 or args.warmup < 0:
        p.error("--runs must be positive and --warmup non-negative")
    if args.dataset_inputs is not None and args.dataset_inputs <= 0:
        p.error(f"--dataset-inputs must be at least 1 (the number of test images), got "
                f"{args.dataset_inputs}; leave it out to time a synthesized --input-size image")
    if args.threads is not None and args.threads <= 0:
        p.error(f"--threads must be positive, got {args.threads}")
    if min(args.input_size) <= 0:
        p.error(f"--input-size must be positive, got {args.input_size}")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answered before torch and detectron2 load

import torch  # noqa: E402

import focus_detr.data  # noqa: E402,F401  (registers the built-in dataset)
from focus_detr.analysis import (  # noqa: E402
    LATENCY_PARTS,
    MODEL_PARTS,
    PartTimer,
    append_result,
    build_model,
    dataset_inputs,
    describe_encoder,
    detail_parts,
    flop_analysis,
    load_config,
    measure_interleaved,
    model_part_counts,
    model_part_parameters,
    paired_ratio,
    resolve_device,
    set_threads,
    spread,
    synthetic_inputs,
)
from focus_detr.analysis.model_io import keep_description  # noqa: E402
from focus_detr.analysis.report import markdown_table  # noqa: E402
from focus_detr.analysis.results import json_ready  # noqa: E402
from focus_detr.engine.allocator import configure_allocator  # noqa: E402
from focus_detr.layers.ms_deform_attn import ENV_VAR, resolve_backend  # noqa: E402


def _labels(args):
    if args.labels:
        return list(args.labels)
    labels = []
    for spec in args.config_file:
        label = Path(spec[0]).stem
        if spec[1:]:
            label += "[" + ",".join(o.rsplit(".", 1)[-1] for o in spec[1:]) + "]"
        while label in labels:
            label += "'"
        labels.append(label)
    return labels


def _runner(model, inputs):
    state = {"i": 0}

    def run():
        x = inputs[state["i"] % len(inputs)]
        state["i"] += 1
        return model([x])

    return run


def calibration_runner(device):
    """(runner, backbone): one forward of the published R50 models' backbone as the published
    code runs it (detectron2's ResNet-50 from the config, no norm folding, contiguous NCHW
    float32 input) on a synthesized normalized 800x1216 image."""
    from detectron2.config import instantiate

    backbone = instantiate(load_config(str(CALIBRATION_CONFIG)).model.backbone).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, *ANCHOR_INPUT_SIZE, generator=generator).to(device)
    return (lambda: backbone(image)), backbone


def anchor_rows(summary, factor=None, anchors=PUBLISHED_ANCHORS):
    """The published-anchor table: per config whose method has an anchor, a dict of
    `ANCHOR_COLUMNS` from its `summary` entry (info, seconds, parts_s, gflops); with a
    --calibrate `factor`, the anchor's time scaled by it."""
    rows = []
    for label, ours in summary.items():
        anchor = anchors.get(ours["info"]["method"])
        if anchor is None:
            continue
        ours_s = ours["seconds"]["median"]
        scaled = anchor["cpu_s"] * factor if anchor["cpu_s"] and factor else None
        values = [
            label,
            anchor["name"],
            anchor["cpu_s"],
            ours_s,
            (anchor["cpu_s"] / ours_s) if anchor["cpu_s"] else None,
            scaled,
            (scaled / ours_s) if scaled else None,
            PUBLISHED_BACKBONE_CPU_S,
            ours.get("parts_s", {}).get("backbone"),
            anchor["gflops"],
            ours["gflops"],
            anchor["paper_gflops"],
        ]
        rows.append(dict(zip(ANCHOR_COLUMNS, values)))
    return rows


def _profile(model, inputs, top_k: int, label: str) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if model.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch.inference_mode(), profile(activities=activities, record_shapes=True) as prof:
        model([inputs[0]])
    sort = "self_cuda_time_total" if model.device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=top_k)
    return f"\nProfile of {label} (one inference, top {top_k} ops by self time):\n{table}"


def main(argv=None):
    args = parse_args(argv)
    if args.msda_backend:
        os.environ[ENV_VAR] = args.msda_backend
    device = resolve_device(args.device)
    threads = args.threads if args.threads is not None else (2 if device.type == "cpu" else None)
    if args.calibrate and (device.type != "cpu" or threads != 2 or args.clock != "wall"):
        raise SystemExit(
            "--calibrate compares this machine with the anchors' setting (CPU, 2 threads, wall "
            f"clock); this run: {device.type}, {threads} thread(s), {args.clock} clock"
        )
    threads = set_threads(threads)
    allocator = configure_allocator(args.malloc)
    labels = _labels(args)
    models, inputs, infos, cfgs, checkpoints = OrderedDict(), {}, {}, {}, {}
    for label, spec in zip(labels, args.config_file):
        cfg = load_config(spec[0], spec[1:])
        checkpoint = cfg.train.get("init_checkpoint", None) or None
        models[label] = build_model(cfg, device, checkpoint)
        cfgs[label], checkpoints[label] = cfg, checkpoint
        infos[label] = describe_encoder(models[label])
        print(f"{label}: {infos[label]['encoder']}, {keep_description(infos[label])}", flush=True)
        if args.dataset_inputs:
            inputs[label] = dataset_inputs(cfg, args.dataset_inputs)
        else:
            inputs[label] = synthetic_inputs(*args.input_size)
    where = (
        f"{args.dataset_inputs} dataset image(s)"
        if args.dataset_inputs
        else f"one synthesized {args.input_size[0]}x{args.input_size[1]} image"
    )
    print(
        f"Device {device}"
        + (
            f" ({torch.cuda.get_device_name(device)})"
            if device.type == "cuda"
            else f", {threads} thread(s)"
        )
        + f"; {where}, batch 1; {args.warmup} warm-up + {args.runs} timed rounds, interleaved"
        + f"; deformable attention: {resolve_backend(args.msda_backend, device)} backend"
        + f"; malloc: {allocator}"
    )

    flops = {}
    if not args.no_flops:
        for label, model in models.items():
            with torch.no_grad():
                flops[label] = model_part_counts(
                    flop_analysis(model, [inputs[label][0]["image"]]), model
                )

    timers = {}
    for label, model in models.items() if not args.no_breakdown else ():
        parts, nested = dict(LATENCY_PARTS), ()
        if args.detail:
            families = detail_parts(model)
            parts.update(families)
            nested = list(families)
        timers[label] = PartTimer(model, parts, device, args.clock, nested=nested)

    def progress(r, name, seconds):
        print(f"  round {r + 1}/{args.runs} {name}: {seconds:.3f} s", flush=True)

    runners = {k: _runner(m, inputs[k]) for k, m in models.items()}
    if args.calibrate:
        runners[CALIBRATION_LABEL] = calibration_runner(device)[0]
    results = measure_interleaved(
        runners, args.runs, args.warmup, timers, {k: device for k in runners}, progress, args.clock
    )
    calibration = None
    if args.calibrate:
        seconds = spread(results.pop(CALIBRATION_LABEL).total)
        calibration = dict(seconds=seconds, factor=seconds["median"] / PUBLISHED_BACKBONE_CPU_S)
        print(
            f"\nCalibration: the published code's backbone (detectron2 ResNet-50, frozen batch "
            f"norms unfolded, one 800x1216 image) takes {seconds['median']:.3f} s here "
            f"(q1-q3 {seconds['q1']:.3f}-{seconds['q3']:.3f}) against the anchors' "
            f"{PUBLISHED_BACKBONE_CPU_S} s: this machine runs that same code "
            f"{calibration['factor']:.2f}x the anchors' time."
        )

    # ---- summary table --------------------------------------------------------------------
    base = labels[0]
    rows = []
    summary = OrderedDict()
    for label in labels:
        s = spread(results[label].total)
        ratio = paired_ratio(results[base].total, results[label].total)
        gflops = flops[label]["total"] / 1e9 if label in flops else None
        fps = 1.0 / s["median"] if args.clock == "wall" else None  # CPU-seconds are no latency
        summary[label] = dict(
            info=infos[label],
            seconds=s,
            fps=fps,
            speedup_vs_first=ratio,
            gflops=gflops,
            params_m=model_part_parameters(models[label])["total"] / 1e6,
        )
        rows.append(
            [
                label,
                infos[label]["method"],
                infos[label]["keep_ratio"],
                gflops,
                s["median"],
                f"{s['q1']:.3f}-{s['q3']:.3f}",
                s["min"],
                s["max"],
                fps,
                ratio["median"],
                f"{ratio['q1']:.2f}-{ratio['q3']:.2f}",
            ]
        )
    unit = "s" if args.clock == "wall" else "CPU-s"
    print(
        f"\nInference per image ({device}, {unit}, median of {args.runs}; speed-up = median of the "
        f"paired per-round ratios time({base}) / time(config)):"
    )
    print(
        markdown_table(
            [
                "config",
                "encoder",
                "keep",
                "GFLOPs",
                f"{unit}/img",
                "q1-q3",
                "min",
                "max",
                "FPS",
                "speed-up",
                "q1-q3",
            ],
            rows,
            3,
        )
    )

    # ---- Figure 2 breakdown ---------------------------------------------------------------
    if timers or flops:
        parts = list(LATENCY_PARTS) + ["rest"]
        rows = []
        for label in labels:
            lat = results[label].part_medians() if timers else {}
            f = flops.get(label)
            for part in parts:
                if f is None:
                    g = None
                elif part == "rest":
                    g = (f["heads"] + f["other"]) / 1e9
                else:
                    g = f[part] / 1e9
                seconds = lat.get(part)
                share = 100.0 * seconds / results[label].median() if seconds is not None else None
                rows.append([label, part, seconds, share, g])
            summary[label]["parts_s"] = lat
            if f is not None:
                summary[label]["parts_gflops"] = {k: f[k] / 1e9 for k in MODEL_PARTS}
        print(
            "\nBreakdown by part (paper Fig. 2; rest = two-stage heads, query selection, "
            "pre/post-processing):"
        )
        print(
            markdown_table(["config", "part", f"{unit} (median)", "% of time", "GFLOPs"], rows, 3)
        )

    if timers and args.detail:
        rows = []
        for label in labels:
            detail = results[label].part_medians(nested=True)
            calls = {k: len(timers[label].modules[k]) for k in detail}
            for name, seconds in detail.items():
                share = 100.0 * seconds / results[label].median()
                rows.append([label, name, calls[name], seconds, share])
            summary[label]["detail_s"] = detail
        print("\nEncoder/decoder detail (each family summed over its modules' calls):")
        print(
            markdown_table(
                ["config", "submodules", "modules", f"{unit} (median)", "% of time"], rows, 3
            )
        )

    # ---- published anchors ----------------------------------------------------------------
    anchor_size = not args.dataset_inputs and tuple(args.input_size) == ANCHOR_INPUT_SIZE
    at_anchor_setting = (
        anchor_size and device.type == "cpu" and threads == 2 and args.clock == "wall"
    )
    factor = calibration["factor"] if calibration else None
    rows = anchor_rows(summary, factor) if anchor_size else []
    for row in rows:
        summary[row["config"]]["published_s_scaled"] = row["published s, scaled"]
    if rows:
        note = (
            "same setting as the anchors"
            if at_anchor_setting
            else "NOT the anchors' setting (CPU, 2 threads, wall clock): compare with care"
        )
        print(
            f"\nPublished anchors beside ours ({note}). Published code: CPU, 2 threads, one "
            "800x1216 image; fvcore counts of the same input; paper: Table 1. Scaled: the "
            "anchor times the --calibrate factor (an estimate: it assumes the whole published "
            "model slows as its backbone does)."
        )
        print(markdown_table(ANCHOR_COLUMNS, [[r[c] for c in ANCHOR_COLUMNS] for r in rows], 2))

    # ---- profile, evaluation, results -----------------------------------------------------
    for label in labels if args.profile else ():
        print(_profile(models[label], inputs[label], args.profile, label))
    for i, label in enumerate(labels):
        ap = None
        if args.eval:
            from focus_detr.analysis.accuracy import evaluate_model

            evaluation = evaluate_model(cfgs[label], models[label])
            summary[label]["evaluation"] = evaluation
            ap = evaluation.get("bbox", {}).get("AP")
            print(f"\n{label}: evaluation {json.dumps(evaluation, default=float)}")
        if args.metrics:
            ap = args.metrics_ap[i]
        summary[label]["ap"] = ap
        if args.results:
            spec = args.config_file[i]
            append_result(
                args.results,
                dict(
                    config=spec[0],
                    overrides=spec[1:],
                    label=label,
                    method=infos[label]["method"],
                    keep_ratio=infos[label]["keep_ratio"],
                    gflops=summary[label]["gflops"],
                    params_m=summary[label]["params_m"],
                    ap=ap,
                    fps=summary[label]["fps"],
                    latency_s=summary[label]["seconds"]["median"],
                    clock=args.clock,
                    device=str(device),
                    threads=threads,
                    malloc=allocator,
                    checkpoint=checkpoints[label],
                    tool="benchmark",
                    msda_backend=resolve_backend(args.msda_backend, device),
                    folded_norms=bool(getattr(models[label], "fold_backbone_norms", False)),
                    input_size=(
                        f"dataset:{args.dataset_inputs}"
                        if args.dataset_inputs
                        else list(args.input_size)
                    ),
                ),
            )
    if args.results:
        print(f"\nAppended {len(labels)} record(s) to {args.results}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(
                json_ready({
                    "device": str(device),
                    "threads": threads,
                    "malloc": allocator,
                    "runs": args.runs,
                    "clock": args.clock,
                    "configs": summary,
                    "raw_seconds": {k: r.total for k, r in results.items()},
                    "raw_parts": {k: r.parts for k, r in results.items()},
                    "calibration": calibration,
                }),
                f,
                indent=1,
                default=lambda v: json_ready(float(v)),  # tensors, numpy scalars
                allow_nan=False,  # NaN (e.g. COCO's AP of an absent size) written as null
            )
    return summary


if __name__ == "__main__":
    main()
