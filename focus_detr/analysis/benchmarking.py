"""Inference-speed comparison of detector configs, the library behind `tools/benchmark.py`:
the configs' models with their inputs, interleaved timing rounds with the per-part breakdown of
the paper's Figure 2, the calibration against the published code's backbone, the printed tables
and the records of the JSON-lines results file."""

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch
from detectron2.config import instantiate
from torch.profiler import ProfilerActivity, profile

from ..deploy.comparison import compare_runtimes
from .accuracy import evaluate_model
from .flops import MODEL_PARTS, flop_analysis, model_part_counts, model_part_parameters
from .latency import LATENCY_PARTS, PartTimer, detail_parts, measure_interleaved, paired_ratio
from .latency import spread
from .model_io import (
    build_model,
    dataset_inputs,
    describe_encoder,
    keep_description,
    load_config,
    synthetic_inputs,
)
from .published import (
    ANCHOR_COLUMNS,
    ANCHOR_INPUT_SIZE,
    PUBLISHED_ANCHORS,
    PUBLISHED_BACKBONE_CPU_S,
)
from .report import markdown_table
from .results import append_result, json_ready

__all__ = [
    "ANCHOR_SETTING",
    "BenchmarkModels",
    "CALIBRATION_CONFIG",
    "CALIBRATION_LABEL",
    "anchor_rows",
    "anchor_table",
    "breakdown_table",
    "build_benchmark_models",
    "calibration_runner",
    "config_labels",
    "count_flops",
    "detail_table",
    "evaluate_and_record",
    "model_runner",
    "part_timers",
    "profile_table",
    "run_header",
    "runtime_tables",
    "summary_table",
    "time_rounds",
    "write_measurements",
]

# The published R50 models' backbone: detectron2's ResNet-50 with frozen batch norms, the same
# code the published code runs, timed unfolded (as the published code runs it) by the calibration.
CALIBRATION_CONFIG = (
    Path(__file__).resolve().parents[2] / "projects" / "dino" / "configs" / "models" / "dino_r50.py"
)
CALIBRATION_LABEL = "published backbone"
# The setting the published anchors were measured in: device type, threads, clock
ANCHOR_SETTING = ("cpu", 2, "wall")


def _print(line: str) -> None:
    print(line, flush=True)  # progress lines show while the rounds run


def config_labels(specs: Sequence[Sequence[str]], labels: Optional[Sequence[str]] = None):
    """A unique name per config.

    Args:
        specs: per config, its path followed by its `key=value` overrides.
        labels: names given by the user, returned as they are when set.

    Returns:
        list of str: the given labels, else each file's stem with its overrides' last key parts
        in brackets, primed (') until unique.
    """
    if labels:
        return list(labels)
    names = []
    for spec in specs:
        label = Path(spec[0]).stem
        if spec[1:]:
            label += "[" + ",".join(o.rsplit(".", 1)[-1] for o in spec[1:]) + "]"
        while label in names:
            label += "'"
        names.append(label)
    return names


@dataclass
class BenchmarkModels:
    """The configs' models and what the benchmark needs of each, keyed by label in config order.

    Attributes:
        models: the inference models.
        inputs: per label, the list of detectron2 input dicts the rounds cycle through.
        infos: per label, `describe_encoder`'s description (method, keep ratio, ...).
        cfgs: per label, the loaded config (for the evaluation).
        checkpoints: per label, the config's `train.init_checkpoint` or None.
    """

    models: "OrderedDict[str, torch.nn.Module]" = field(default_factory=OrderedDict)
    inputs: Dict[str, list] = field(default_factory=dict)
    infos: Dict[str, dict] = field(default_factory=dict)
    cfgs: Dict[str, object] = field(default_factory=dict)
    checkpoints: Dict[str, Optional[str]] = field(default_factory=dict)


def build_benchmark_models(
    specs: Sequence[Sequence[str]],
    labels: Sequence[str],
    device: torch.device,
    input_size: Sequence[int],
    num_dataset_inputs: Optional[int] = None,
    log: Callable[[str], None] = _print,
) -> BenchmarkModels:
    """Build each config's model (with its checkpoint) and its inputs, logging its encoder.

    Args:
        specs: per config, its path followed by its `key=value` overrides.
        labels: a name per config.
        device: where the models run.
        input_size: (H, W) of the synthesized image, when `num_dataset_inputs` is not set.
        num_dataset_inputs: cycle through the first N test images of each config instead.
        log: called with one line per model.

    Returns:
        BenchmarkModels: the models, inputs, descriptions, configs and checkpoints.
    """
    built = BenchmarkModels()
    for label, spec in zip(labels, specs):
        cfg = load_config(spec[0], spec[1:])
        checkpoint = cfg.train.get("init_checkpoint", None) or None
        model = build_model(cfg, device, checkpoint)
        built.models[label], built.cfgs[label], built.checkpoints[label] = model, cfg, checkpoint
        built.infos[label] = describe_encoder(model)
        log(f"{label}: {built.infos[label]['encoder']}, {keep_description(built.infos[label])}")
        if num_dataset_inputs:
            built.inputs[label] = dataset_inputs(cfg, num_dataset_inputs)
        else:
            built.inputs[label] = synthetic_inputs(*input_size)
    return built


def count_flops(built: BenchmarkModels) -> Dict[str, dict]:
    """Per label, FLOPs by model part (`model_part_counts`) of one inference on its first input."""
    flops = {}
    for label, model in built.models.items():
        with torch.no_grad():
            flops[label] = model_part_counts(
                flop_analysis(model, [built.inputs[label][0]["image"]]), model
            )
    return flops


def part_timers(models, device, clock: str = "wall", detail: bool = False):
    """Per label, a `PartTimer` on the Figure 2 parts (`LATENCY_PARTS`), with `detail` also on
    the encoder's and decoder's submodule families (nested in those parts)."""
    timers = {}
    for label, model in models.items():
        parts, nested = dict(LATENCY_PARTS), ()
        if detail:
            families = detail_parts(model)
            parts.update(families)
            nested = list(families)
        timers[label] = PartTimer(model, parts, device, clock, nested=nested)
    return timers


def model_runner(model, inputs):
    """A callable running one batch-1 inference per call, cycling through `inputs`."""
    state = {"i": 0}

    def run():
        x = inputs[state["i"] % len(inputs)]
        state["i"] += 1
        return model([x])

    return run


def calibration_runner(device, config=CALIBRATION_CONFIG, input_size=ANCHOR_INPUT_SIZE):
    """One forward of the published R50 models' backbone as the published code runs it.

    Args:
        device: where it runs.
        config: the config whose `model.backbone` is built (detectron2's ResNet-50, no norm
            folding).
        input_size: (H, W) of the synthesized normalized image (contiguous NCHW float32).

    Returns:
        tuple: (runner, backbone): a callable running one forward, and the backbone.
    """
    backbone = instantiate(load_config(str(config)).model.backbone).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, *input_size, generator=generator).to(device)
    return (lambda: backbone(image)), backbone


def time_rounds(built, device, runs, warmup, timers, clock="wall", calibrate=False, log=_print):
    """Time the models (and with `calibrate` the published backbone) in interleaved rounds.

    Args:
        built: the `BenchmarkModels`.
        device: where they run (every clock reading synchronized on CUDA).
        runs: timed rounds; warmup: untimed rounds first.
        timers: per label, a `PartTimer` (may be empty: whole inferences only).
        clock: "wall" or "cpu".
        calibrate: also time `calibration_runner` in the same rounds.
        log: called with one line per timed call.

    Returns:
        tuple: (results, calibration): per label, the `LatencyResult`; and None, or with
        `calibrate` a dict of the backbone's `seconds` (spread) and `factor` (its median over the
        anchors' `PUBLISHED_BACKBONE_CPU_S`).
    """

    def progress(r, name, seconds):
        log(f"  round {r + 1}/{runs} {name}: {seconds:.3f} s")

    runners = {k: model_runner(m, built.inputs[k]) for k, m in built.models.items()}
    if calibrate:
        runners[CALIBRATION_LABEL] = calibration_runner(device)[0]
    results = measure_interleaved(
        runners, runs, warmup, timers, {k: device for k in runners}, progress, clock
    )
    if not calibrate:
        return results, None
    seconds = spread(results.pop(CALIBRATION_LABEL).total)
    calibration = dict(seconds=seconds, factor=seconds["median"] / PUBLISHED_BACKBONE_CPU_S)
    log(
        f"\nCalibration: the published code's backbone (detectron2 ResNet-50, frozen batch "
        f"norms unfolded, one 800x1216 image) takes {seconds['median']:.3f} s here "
        f"(q1-q3 {seconds['q1']:.3f}-{seconds['q3']:.3f}) against the anchors' "
        f"{PUBLISHED_BACKBONE_CPU_S} s: this machine runs that same code "
        f"{calibration['factor']:.2f}x the anchors' time."
    )
    return results, calibration


def summary_table(built, results, flops, device, runs, clock="wall"):
    """The per-config summary: timing spread, FPS, speed-up against the first config.

    Args:
        built: the `BenchmarkModels`; results: per label, its `LatencyResult`.
        flops: per label, `count_flops`'s counts (labels left out: no GFLOPs).
        device, runs, clock: the run's setting, for the title.

    Returns:
        tuple: (summary, text): per label a dict of info, seconds, fps (None on the CPU clock:
        CPU-seconds are no latency), speedup_vs_first, gflops, params_m; and the titled table.
    """
    labels = list(built.models)
    base = labels[0]
    rows, summary = [], OrderedDict()
    for label in labels:
        s = spread(results[label].total)
        ratio = paired_ratio(results[base].total, results[label].total)
        gflops = flops[label]["total"] / 1e9 if label in flops else None
        fps = 1.0 / s["median"] if clock == "wall" else None
        info = built.infos[label]
        summary[label] = dict(
            info=info,
            seconds=s,
            fps=fps,
            speedup_vs_first=ratio,
            gflops=gflops,
            params_m=model_part_parameters(built.models[label])["total"] / 1e6,
        )
        rows.append(
            [
                label,
                info["method"],
                info["keep_ratio"],
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
    unit = _unit(clock)
    columns = [
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
    ]
    title = (
        f"\nInference per image ({device}, {unit}, median of {runs}; speed-up = median of the "
        f"paired per-round ratios time({base}) / time(config)):"
    )
    return summary, title + "\n" + markdown_table(columns, rows, 3)


def breakdown_table(summary, results, flops, timed=True, clock="wall"):
    """The Figure 2 breakdown: per config and part (`LATENCY_PARTS` and "rest", the two-stage
    heads, query selection and pre/post-processing), the median time, its share and GFLOPs.
    Adds `parts_s` (and with FLOPs `parts_gflops`) to each `summary` entry; `timed` is False
    when no part was timed. Returns the titled table."""
    rows = []
    for label in summary:
        lat = results[label].part_medians() if timed else {}
        f = flops.get(label)
        for part in list(LATENCY_PARTS) + ["rest"]:
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
    columns = ["config", "part", f"{_unit(clock)} (median)", "% of time", "GFLOPs"]
    return (
        "\nBreakdown by part (paper Fig. 2; rest = two-stage heads, query selection, "
        "pre/post-processing):\n" + markdown_table(columns, rows, 3)
    )


def detail_table(summary, results, timers, clock="wall"):
    """The encoder's and decoder's submodule families (each summed over its modules' calls):
    per config, the median time and its share; adds `detail_s` to each `summary` entry.
    Returns the titled table."""
    rows = []
    for label in summary:
        detail = results[label].part_medians(nested=True)
        for name, seconds in detail.items():
            share = 100.0 * seconds / results[label].median()
            rows.append([label, name, len(timers[label].modules[name]), seconds, share])
        summary[label]["detail_s"] = detail
    columns = ["config", "submodules", "modules", f"{_unit(clock)} (median)", "% of time"]
    return (
        "\nEncoder/decoder detail (each family summed over its modules' calls):\n"
        + markdown_table(columns, rows, 3)
    )


def anchor_rows(summary, factor=None, anchors=PUBLISHED_ANCHORS):
    """The published-anchor table's rows.

    Args:
        summary: per label, a dict with info (method), seconds (median), parts_s (backbone,
            optional) and gflops.
        factor: the calibration factor; with it, the anchor's time scaled by it.
        anchors: per method, the published figures (name, cpu_s, gflops, paper_gflops).

    Returns:
        list of dict: per config whose method has an anchor, its `ANCHOR_COLUMNS`.
    """
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


def anchor_table(summary, setting, input_size, dataset_inputs=None, calibration=None):
    """The published anchors beside ours, when the inputs are synthesized at the anchors' size.

    Args:
        summary: `summary_table`'s summary (with `parts_s` when broken down); each anchored
            entry gets `published_s_scaled`.
        setting: (device type, threads, clock) of this run, compared with `ANCHOR_SETTING`.
        input_size: (H, W) of the synthesized image.
        dataset_inputs: the number of dataset images timed instead (then no table).
        calibration: `time_rounds`'s calibration, for the scaled anchor times.

    Returns:
        str: the titled table, or "" when no config has an anchor or the size differs.
    """
    if dataset_inputs or tuple(input_size) != ANCHOR_INPUT_SIZE:
        return ""
    rows = anchor_rows(summary, calibration["factor"] if calibration else None)
    for row in rows:
        summary[row["config"]]["published_s_scaled"] = row["published s, scaled"]
    if not rows:
        return ""
    note = (
        "same setting as the anchors"
        if tuple(setting) == ANCHOR_SETTING
        else "NOT the anchors' setting (CPU, 2 threads, wall clock): compare with care"
    )
    title = (
        f"\nPublished anchors beside ours ({note}). Published code: CPU, 2 threads, one "
        "800x1216 image; fvcore counts of the same input; paper: Table 1. Scaled: the "
        "anchor times the --calibrate factor (an estimate: it assumes the whole published "
        "model slows as its backbone does)."
    )
    table = markdown_table(ANCHOR_COLUMNS, [[r[c] for c in ANCHOR_COLUMNS] for r in rows], 2)
    return title + "\n" + table


def profile_table(model, inputs, top_k: int, label: str) -> str:
    """torch.profiler's top `top_k` ops by self time (CUDA time on CUDA) of one inference of
    `model` on `inputs[0]`, titled with `label`."""
    activities = [ProfilerActivity.CPU]
    if model.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch.inference_mode(), profile(activities=activities, record_shapes=True) as prof:
        model([inputs[0]])
    sort = "self_cuda_time_total" if model.device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=top_k)
    return f"\nProfile of {label} (one inference, top {top_k} ops by self time):\n{table}"


def evaluate_and_record(
    built, summary, specs, run, evaluate=False, metrics_ap=(), results_file=None, log=_print
):
    """Each config's AP (evaluated, read from metrics files, or None) into `summary` (`ap`,
    and `evaluation` when evaluated), and with `results_file` one results record per config.

    Args:
        built: the `BenchmarkModels`; summary: `summary_table`'s summary.
        specs: per config, its path and overrides (the records' config and overrides).
        run: the run's setting for the records: clock, device, threads, malloc, msda_backend,
            input_size.
        evaluate: evaluate each config on its test set (`evaluate_model`).
        metrics_ap: per config, the AP read from its metrics file (instead of `evaluate`).
        results_file: the JSON-lines file to append the records to.
        log: called with each evaluation's line.
    """
    for i, label in enumerate(summary):
        ap = None
        if evaluate:
            evaluation = evaluate_model(built.cfgs[label], built.models[label])
            summary[label]["evaluation"] = evaluation
            ap = evaluation.get("bbox", {}).get("AP")
            log(f"\n{label}: evaluation {json.dumps(evaluation, default=float)}")
        if metrics_ap:
            ap = metrics_ap[i]
        summary[label]["ap"] = ap
        if results_file:
            info, ours = built.infos[label], summary[label]
            append_result(
                results_file,
                dict(
                    config=specs[i][0],
                    overrides=specs[i][1:],
                    label=label,
                    method=info["method"],
                    keep_ratio=info["keep_ratio"],
                    gflops=ours["gflops"],
                    params_m=ours["params_m"],
                    ap=ap,
                    fps=ours["fps"],
                    latency_s=ours["seconds"]["median"],
                    clock=run["clock"],
                    device=run["device"],
                    threads=run["threads"],
                    malloc=run["malloc"],
                    checkpoint=built.checkpoints[label],
                    tool="benchmark",
                    msda_backend=run["msda_backend"],
                    folded_norms=bool(getattr(built.models[label], "fold_backbone_norms", False)),
                    input_size=run["input_size"],
                ),
            )


def write_measurements(path, summary, results, calibration, run, runs):
    """The full measurements as JSON at `path` (folders created): the run's device, threads,
    malloc and clock, `runs`, the summary, every round's seconds and part seconds and the
    calibration; non-finite numbers (e.g. COCO's AP of an absent size) as null."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(
            json_ready(
                {
                    "device": run["device"],
                    "threads": run["threads"],
                    "malloc": run["malloc"],
                    "runs": runs,
                    "clock": run["clock"],
                    "configs": summary,
                    "raw_seconds": {k: r.total for k, r in results.items()},
                    "raw_parts": {k: r.parts for k, r in results.items()},
                    "calibration": calibration,
                }
            ),
            f,
            indent=1,
            default=lambda v: json_ready(float(v)),  # tensors, numpy scalars
            allow_nan=False,
        )


def _unit(clock):
    return "s" if clock == "wall" else "CPU-s"


def runtime_tables(
    built: BenchmarkModels,
    runtimes: Sequence[str],
    precisions: Sequence[str],
    threads: int,
    rounds: int,
) -> str:
    """Per config: eager PyTorch beside its exported graph in `runtimes` ("onnxruntime",
    "openvino") at each of `precisions` they offer, timed in interleaved rounds on its first
    input (`focus_detr.deploy.comparison.compare_runtimes`; CPU, `threads` for all)."""
    blocks = []
    for label, model in built.models.items():
        image = built.inputs[label][0]["image"]
        comparison = compare_runtimes(
            model, image, precisions, ("eager", *runtimes), threads=threads, rounds=rounds
        )
        size = "x".join(str(v) for v in image.shape[-2:])
        blocks.append(
            f"\n{label}: eager vs exported runtimes, {size}, {threads} thread(s), {rounds} "
            f"interleaved rounds\n{comparison.table()}"
        )
    return "\n".join(blocks)


def run_header(
    device: torch.device,
    threads: Optional[int],
    input_size: Sequence[int],
    num_dataset_inputs: Optional[int],
    warmup: int,
    runs: int,
) -> str:
    """The first line of the benchmark's report: device (GPU name or threads), inputs, rounds."""
    where = (
        f"{num_dataset_inputs} dataset image(s)"
        if num_dataset_inputs
        else f"one synthesized {input_size[0]}x{input_size[1]} image"
    )
    on = (
        f" ({torch.cuda.get_device_name(device)})"
        if device.type == "cuda"
        else f", {threads} thread(s)"
    )
    return (
        f"Device {device}{on}; {where}, batch 1; {warmup} warm-up + {runs} timed rounds, "
        "interleaved"
    )
