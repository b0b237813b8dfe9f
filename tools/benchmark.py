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

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # this checkout's focus_detr

from focus_detr.cli import filter_known_warnings, standalone_module, tool_parser  # noqa: E402

filter_known_warnings()  # before torch/detectron2 import: their import-time warnings

_allocator = standalone_module("focus_detr.engine.allocator")
ALLOCATOR_ENV_VAR, ALLOCATOR_SETTINGS = _allocator.ALLOCATOR_ENV_VAR, _allocator.ALLOCATOR_SETTINGS

# Figures measured outside this project (the published code's CPU times, the paper's table),
# each with its source, in one data file; read before torch loads for the help texts
_published = standalone_module("focus_detr.analysis.published")
PUBLISHED_FIGURES, PUBLISHED_ANCHORS = _published.PUBLISHED_FIGURES, _published.PUBLISHED_ANCHORS
PUBLISHED_BACKBONE_CPU_S = _published.PUBLISHED_BACKBONE_CPU_S
ANCHOR_INPUT_SIZE, ANCHOR_COLUMNS = _published.ANCHOR_INPUT_SIZE, _published.ANCHOR_COLUMNS


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
    p.add_argument(
        "--runtimes",
        nargs="+",
        choices=("onnxruntime", "openvino"),
        help="also export each config's model (ONNX, float32 input, the input's size) and time "
        "it in these runtimes beside eager PyTorch, interleaved, on the same image (CPU; needs "
        "pip install -e '.[deploy]')",
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        metavar="P",
        help="with --runtimes: fp32 (default), bf16, int8: each runtime runs those it offers",
    )
    p.add_argument("--results", help="append one JSON line per config (fps, latency, gflops, ap)")
    p.add_argument("--json", help="write the full measurements to this JSON file")
    args = p.parse_args(argv)
    if args.runtimes and (args.dataset_inputs or args.device == "cuda"):
        p.error(
            "--runtimes times the exported graphs on CPU on one synthesized image: use it "
            "without --dataset-inputs and with --device cpu (or auto)"
        )
    if any("=" in x for x in args.precisions):
        p.error(
            "--precisions took a key=value override: put the config files and their "
            "overrides before --precisions"
        )
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
        p.error(
            f"--dataset-inputs must be at least 1 (the number of test images), got "
            f"{args.dataset_inputs}; leave it out to time a synthesized --input-size image"
        )
    if args.threads is not None and args.threads <= 0:
        p.error(f"--threads must be positive, got {args.threads}")
    if min(args.input_size) <= 0:
        p.error(f"--input-size must be positive, got {args.input_size}")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answered before torch and detectron2 load

import focus_detr.data  # noqa: E402,F401  (registers the built-in dataset)
from focus_detr.analysis import resolve_device, set_threads  # noqa: E402

# anchor_rows and calibration_runner stay importable from the tool, as before
from focus_detr.analysis.benchmarking import (  # noqa: E402,F401
    ANCHOR_SETTING,
    anchor_rows,
    anchor_table,
    breakdown_table,
    build_benchmark_models,
    calibration_runner,
    config_labels,
    count_flops,
    detail_table,
    evaluate_and_record,
    part_timers,
    profile_table,
    run_header,
    runtime_tables,
    summary_table,
    time_rounds,
    write_measurements,
)
from focus_detr.engine.allocator import configure_allocator  # noqa: E402
from focus_detr.layers.ms_deform_attn import ENV_VAR, resolve_backend  # noqa: E402


def main(argv=None):
    args = parse_args(argv)
    if args.msda_backend:
        os.environ[ENV_VAR] = args.msda_backend
    device = resolve_device(args.device)
    threads = args.threads if args.threads is not None else (2 if device.type == "cpu" else None)
    if args.calibrate and (device.type, threads, args.clock) != ANCHOR_SETTING:
        raise SystemExit(
            "--calibrate compares this machine with the anchors' setting (CPU, 2 threads, wall "
            f"clock); this run: {device.type}, {threads} thread(s), {args.clock} clock"
        )
    if args.runtimes and device.type != "cpu":
        raise SystemExit(f"--runtimes times the exported graphs on CPU, not {device}: --device cpu")
    threads = set_threads(threads)
    allocator = configure_allocator(args.malloc)
    labels = config_labels(args.config_file, args.labels)
    built = build_benchmark_models(
        args.config_file, labels, device, args.input_size, args.dataset_inputs
    )
    msda_backend = resolve_backend(args.msda_backend, device)
    print(
        run_header(device, threads, args.input_size, args.dataset_inputs, args.warmup, args.runs)
        + f"; deformable attention: {msda_backend} backend; malloc: {allocator}"
    )
    flops = {} if args.no_flops else count_flops(built)
    timers = {} if args.no_breakdown else part_timers(built.models, device, args.clock, args.detail)
    results, calibration = time_rounds(
        built, device, args.runs, args.warmup, timers, args.clock, args.calibrate
    )
    summary, table = summary_table(built, results, flops, device, args.runs, args.clock)
    print(table)
    if timers or flops:
        print(breakdown_table(summary, results, flops, bool(timers), args.clock))
    if timers and args.detail:
        print(detail_table(summary, results, timers, args.clock))
    setting = (device.type, threads, args.clock)
    table = anchor_table(summary, setting, args.input_size, args.dataset_inputs, calibration)
    if table:
        print(table)
    if args.runtimes:
        print(runtime_tables(built, args.runtimes, args.precisions, threads or 0, args.runs))
    for label in labels if args.profile else ():
        print(profile_table(built.models[label], built.inputs[label], args.profile, label))
    run = dict(
        clock=args.clock,
        device=str(device),
        threads=threads,
        malloc=allocator,
        msda_backend=msda_backend,
        input_size=f"dataset:{args.dataset_inputs}"
        if args.dataset_inputs
        else list(args.input_size),
    )
    evaluate_and_record(
        built, summary, args.config_file, run, args.eval, args.metrics_ap, args.results
    )
    if args.results:
        print(f"\nAppended {len(labels)} record(s) to {args.results}")
    if args.json:
        write_measurements(args.json, summary, results, calibration, run, args.runs)
    return summary


if __name__ == "__main__":
    main()
