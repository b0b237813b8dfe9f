#!/usr/bin/env python
"""Analyze a detector's cost: FLOPs, parameters, activations, structure (detectron2/detrex's
`analyze_model.py` tasks).

    python tools/analyze_model.py --config-file projects/focus_detr/configs/focus_detr_tiny_synthetic.py \\
        --tasks flop parameter --num-inputs 10
    python tools/analyze_model.py --config-file projects/focus_detr/configs/models/focus_detr_r50.py \\
        --tasks flop --input-size 800 1216 [train.init_checkpoint=model.pth]

FLOPs (fvcore; one multiply-add = one flop) are averaged over the first `--num-inputs` test
images of the config's dataset, or counted on one synthesized image of `--input-size H W`.
Deformable attention is counted by its op's handle (5 multiply-adds per sampled point and
channel), scaled-dot-product attention as its two matrix products; elementwise ops are not
counted (fvcore's convention). Per-module table of the first input (fvcore's), then the parts:
backbone / neck / encoder / decoder / heads / other, which sum to the total (see
`focus_detr.analysis.flops`). Without a checkpoint the model is randomly initialized (costs do
not depend on the weights, except through a sparse encoder's selection counts, which do not
either: they depend only on the image size).
"""

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

from focus_detr.cli import (  # noqa: E402
    Progress,
    check_overrides,
    filter_known_warnings,
    tool_parser,
)

filter_known_warnings()  # before torch/detectron2 import: their import-time warnings


TASKS = ("flop", "parameter", "activation", "structure")


def parse_args(argv=None):
    p = tool_parser(__doc__)
    p.add_argument("--config-file", required=True, help="LazyConfig file defining `model`")
    p.add_argument(
        "--tasks",
        nargs="+",
        required=True,
        metavar="TASK",
        help=f"what to analyze: {', '.join(TASKS)}",
    )
    p.add_argument(
        "--num-inputs",
        type=int,
        default=1,
        help="average over this many test images of the config's dataset",
    )
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="count on one synthesized image of this size instead of the dataset",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--max-depth", type=int, default=3, help="depth of the per-module tables")
    p.add_argument("--results", help="append a JSON line (config, keep_ratio, gflops, params) here")
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides key=value, e.g. train.init_checkpoint=model.pth",
    )
    args = p.parse_args(argv)
    # `--tasks flop key=value`: the overrides after the tasks belong to opts
    args.opts = check_overrides(p, [t for t in args.tasks if "=" in t] + list(args.opts))
    args.tasks = [t for t in args.tasks if "=" not in t]
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown or not args.tasks:
        p.error(f"--tasks: invalid task(s) {unknown or args.tasks}; choose from {', '.join(TASKS)}")
    if args.num_inputs <= 0:
        p.error("--num-inputs must be positive")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answered before torch and detectron2 load

import torch  # noqa: E402

import focus_detr.data  # noqa: E402,F401  (registers the built-in dataset)
from focus_detr.analysis import (
    MODEL_PARTS,
    activation_analysis,
    append_result,  # noqa: E402
    build_model,
    dataset_inputs,
    describe_encoder,
    flop_analysis,
    load_config,
    model_part_counts,
    model_part_parameters,
    module_counts,
    resolve_device,
    set_threads,
    synthetic_inputs,
)
from focus_detr.analysis.model_io import keep_description  # noqa: E402
from focus_detr.analysis.report import markdown_table  # noqa: E402


def _inputs(args, cfg):
    if args.input_size is not None:
        h, w = args.input_size
        return synthetic_inputs(h, w, num=1), [h, w]
    return dataset_inputs(cfg, args.num_inputs), f"dataset:{args.num_inputs}"


def _parts_table(per_input, unit: float, unit_name: str, digits: int = 3) -> str:
    names = list(MODEL_PARTS) + ["total"]
    total = statistics.mean(p["total"] for p in per_input)
    rows = []
    for name in names:
        values = [p[name] / unit for p in per_input]
        mean = statistics.mean(values)
        std = statistics.pstdev(values) if len(values) > 1 else 0.0
        share = 100.0 * mean * unit / total if total else float("nan")
        rows.append([name, mean, std, share])
    return markdown_table(["part", f"{unit_name} (mean)", "std", "% of total"], rows, digits)


def run_counts(args, model, inputs, kind: str):
    """Per-input part counts of `kind` ("flop" or "activation"); prints the tables."""
    from fvcore.nn import flop_count_table

    analyze = flop_analysis if kind == "flop" else activation_analysis
    per_input = []
    # tracing a large model takes a minute per input: say so before, and what is left after
    progress = Progress(len(inputs), f"{kind} count (fvcore traces the model)", min_interval_s=0)
    for i, x in enumerate(inputs):
        if i == 0:
            print(
                f"{kind} count: tracing the model on {len(inputs)} input(s) "
                f"({tuple(x['image'].shape[-2:])} first) ...",
                flush=True,
            )
        with torch.no_grad():
            analysis = analyze(model, [x["image"]])
            parts = model_part_counts(analysis, model)
        progress.update(i + 1, f"input {tuple(x['image'].shape[-2:])}")
        if i == 0:
            print(
                f"\n{kind.capitalize()} count per module, first input "
                f"({tuple(x['image'].shape[-2:])}):"
            )
            if kind == "flop":
                print(flop_count_table(analysis, max_depth=args.max_depth, show_param_shapes=False))
                skipped = dict(analysis.unsupported_ops())
                if skipped:
                    print(f"Ops not counted (no handle): {skipped}")
            else:
                counts = module_counts(analysis, model, args.max_depth)
                print(
                    markdown_table(
                        ["module", "M activations"], [[k, v / 1e6] for k, v in counts.items()], 3
                    )
                )
        per_input.append(parts)
    unit, name = (1e9, "GFLOPs") if kind == "flop" else (1e6, "M activations")
    sizes = sorted({tuple(x["image"].shape[-2:]) for x in inputs})
    print(
        f"\n{kind.capitalize()} count by part, mean over {len(inputs)} input(s) "
        f"(sizes {sizes[:4]}{' ...' if len(sizes) > 4 else ''}):"
    )
    print(_parts_table(per_input, unit, name))
    return per_input


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    cfg = load_config(args.config_file, args.opts)
    device = resolve_device(args.device)
    checkpoint = cfg.train.get("init_checkpoint", None) or None
    model = build_model(cfg, device, checkpoint)
    info = describe_encoder(model)
    print(
        f"Model {type(model).__name__} from {args.config_file}: encoder {info['encoder']} "
        f"({keep_description(info)}), weights: {checkpoint or 'random init'}, "
        f"device {device}"
    )
    out = {"info": info}
    inputs, input_desc = (None, None)
    if "flop" in args.tasks or "activation" in args.tasks:
        inputs, input_desc = _inputs(args, cfg)
    if "flop" in args.tasks:
        out["flop"] = run_counts(args, model, inputs, "flop")
    if "activation" in args.tasks:
        out["activation"] = run_counts(args, model, inputs, "activation")
    if "parameter" in args.tasks:
        from fvcore.nn import parameter_count_table

        print("\nParameters per module:")
        print(parameter_count_table(model, max_depth=args.max_depth))
        parts = model_part_parameters(model)
        total = parts["total"]
        print("\nParameters by part:")
        print(
            markdown_table(
                ["part", "M params", "% of total"],
                [[k, v / 1e6, 100.0 * v / total] for k, v in parts.items()],
                3,
            )
        )
        out["parameter"] = parts
    if "structure" in args.tasks:
        print("\nStructure:")
        print(model)
    if args.results:
        record = dict(
            config=args.config_file,
            overrides=list(args.opts),
            method=info["method"],
            keep_ratio=info["keep_ratio"],
            checkpoint=checkpoint,
            device=str(device),
            tool="analyze_model",
        )
        if "flop" in out:
            record["gflops"] = statistics.mean(p["total"] for p in out["flop"]) / 1e9
            record["gflops_parts"] = {
                k: statistics.mean(p[k] for p in out["flop"]) / 1e9 for k in MODEL_PARTS
            }
            record["input_size"] = input_desc
        if "parameter" in out:
            record["params_m"] = out["parameter"]["total"] / 1e6
        append_result(args.results, record)
        print(f"\nAppended to {args.results}")
    return out


if __name__ == "__main__":
    main()
