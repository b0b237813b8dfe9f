#!/usr/bin/env python
"""Keep-ratio sweep of the three swappable encoders (the paper's Table 6).

For each encoder (dense DINO, Sparse DETR, Focus-DETR) and keep ratio, builds the model from ONE
config (`model.transformer.encoder.name` / `.keep_ratio` overrides, see
`focus_detr.modeling.encoders`) and prints what needs no training: GFLOPs (fvcore's
`FlopCountAnalysis` on one image, deformable attention included), parameters and latency on the
current device. With `--checkpoint` (trained weights) or `--train-iters N` (an equal training
budget for every model, same seed and data order) it also reports box AP on the config's test
set and the foreground recall of the kept tokens (fraction of ground-truth foreground tokens, by
Focus-DETR's label assignment, that the encoder keeps; mean over layers and first layer).

Examples:

    # Table 6's cost columns at 800x1216, CPU, 2 threads, batch 1 (DINO-R50 family)
    python tools/sweep_keep_ratio.py --device cpu --threads 2
    # equal-budget comparison on the built-in dataset
    python tools/sweep_keep_ratio.py \\
        --config-file projects/sparse_detr/configs/dino_sparse_tiny_synthetic.py \\
        --encoders sparse focus --keep-ratios 0.3 --train-iters 300 --image-size 288 384
    # AP against GFLOPs: the sweep's records are the plot's input
    python tools/sweep_keep_ratio.py \\
        --config-file projects/sparse_detr/configs/dino_sparse_tiny_synthetic.py \\
        --encoders dense sparse focus --train-iters 300 --results output/sweep.jsonl
    python tools/plot_ap_flops.py --results output/sweep.jsonl --output ap_vs_gflops.png
    # AP of trained models (NAME is dense, or sparse@RATIO / focus@RATIO)
    python tools/sweep_keep_ratio.py --encoders sparse --keep-ratios 0.3 \\
        --checkpoint sparse@0.3=output/dino_sparse_r50_4scale_36ep/model_final.pth

FLOP convention: fvcore counts one multiply-add as one flop; deformable attention is counted by
the MSDA op's handle when this checkout has one (`MSDA_FLOP_HANDLES`: 5 multiply-adds per
sampled channel), otherwise through its `grid_sample` calls (fvcore: 4 per sampled channel);
`scaled_dot_product_attention` (QK^T and AV products) is counted here; element-wise ops are not.
"""

import contextlib
import copy
import gc
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

from focus_detr.cli import filter_known_warnings, tool_parser  # noqa: E402

filter_known_warnings()  # before torch/detectron2 import: their import-time warnings

DEFAULT_CONFIG = "projects/sparse_detr/configs/dino_sparse_r50_4scale_36ep.py"
ENCODERS = ("dense", "sparse", "focus")


def model_name(encoder: str, ratio: Optional[float]) -> str:
    """dense, or ENCODER@RATIO: the row label and the `--checkpoint` NAME."""
    return encoder if ratio is None else f"{encoder}@{ratio:g}"


def parse_args(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument(
        "--config-file",
        default=DEFAULT_CONFIG,
        help="a config with a swappable encoder (default: %(default)s)",
    )
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    parser.add_argument("--keep-ratios", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument(
        "--image-size",
        nargs=2,
        type=int,
        default=[800, 1216],
        metavar=("H", "W"),
        help="input of the cost measurements",
    )
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, or auto (default: cuda when available)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-flops", action="store_true")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="weights of one model, evaluated as they are (not trained by --train-iters; every "
        "weight must fit): NAME is dense, sparse@RATIO or focus@RATIO",
    )
    parser.add_argument(
        "--train-iters",
        type=int,
        default=0,
        help="train every model without a --checkpoint this many iterations before evaluating",
    )
    parser.add_argument(
        "--eval-images", type=int, default=0, help="evaluate on the first N test images (0: all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--show-paper",
        action="store_true",
        help="add the paper's Table 1/6 values (COCO, V100) as columns",
    )
    parser.add_argument("--output", help="also write the rows as JSON here")
    parser.add_argument(
        "--results",
        metavar="FILE",
        help="append one record per model to this results file (JSON lines), the input of "
        "tools/plot_ap_flops.py (ap, gflops, params_m, latency_s, keep_ratio, method)",
    )
    parser.add_argument("--verbose", action="store_true", help="print the COCO evaluation")
    parser.add_argument(
        "opts", nargs="*", default=[], help="config overrides key=value applied to every model"
    )
    args = parser.parse_args(argv)
    if any(not 0 < r <= 1 for r in args.keep_ratios):
        parser.error(f"--keep-ratios must lie in (0, 1], got {args.keep_ratios}")
    if args.train_iters < 0:
        parser.error(f"--train-iters must be non-negative, got {args.train_iters}")
    if args.eval_images < 0:  # dataset[:-n] would silently drop the last n images
        parser.error(f"--eval-images must be non-negative (0: all), got {args.eval_images}")
    if args.repeats <= 0 and not args.no_latency:  # the latency is the best of the repeats
        parser.error(f"--repeats must be positive, got {args.repeats}")
    # a NAME matching no planned model would be skipped silently, a bad PATH fail after hours
    names = [
        model_name(e, r)
        for e in args.encoders
        for r in ([None] if e == "dense" else args.keep_ratios)
    ]
    seen = set()
    for c in args.checkpoint:
        name, sep, path = c.partition("=")
        if not sep:
            parser.error(f"--checkpoint {c!r}: expected NAME=PATH")
        if name not in names:
            parser.error(
                f"--checkpoint {c!r}: no model named {name!r} in this sweep; "
                f"the models are {', '.join(names)}"
            )
        if name in seen:
            parser.error(f"--checkpoint {c!r}: a second checkpoint for {name!r}")
        seen.add(name)
        if "://" not in path and not Path(path).is_file():  # URLs: detectron2's PathManager
            parser.error(f"--checkpoint {c!r}: file not found: {path}")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answered before torch and detectron2 load

import torch  # noqa: E402
from torch import nn  # noqa: E402


# the paper's Table 6 (COCO val2017, R50, V100) and Table 1 for DINO: (AP, GFLOPs, FPS)
PAPER = {
    ("dense", None): (50.9, 279, 14.2),
    ("sparse", 0.1): (47.5, 126, 23.9),
    ("sparse", 0.2): (47.9, 139, 21.4),
    ("sparse", 0.3): (48.2, 152, 20.2),
    ("sparse", 0.4): (48.4, 166, 18.6),
    ("sparse", 0.5): (48.4, 181, 18.1),
    ("focus", 0.1): (48.9, 128, 23.7),
    ("focus", 0.2): (49.8, 141, 21.3),
    ("focus", 0.3): (50.4, 154, 20.0),
    ("focus", 0.4): (50.4, 169, 18.5),
    ("focus", 0.5): (50.5, 183, 17.9),
}

logger = logging.getLogger("sweep_keep_ratio")


# ------------------------------------------------------------------------------------ config
def load_config(
    config_file: str, encoder: str, keep_ratio: Optional[float], opts: Sequence[str] = ()
):
    """The config with the encoder choice, keep ratio and extra `key=value` overrides."""
    from focus_detr.engine.config import apply_overrides
    from focus_detr.engine.config import load_config as load_strict_config
    from focus_detr.modeling.inference import inference_config_keys

    cfg = load_strict_config(config_file, required=("model",))
    if "choices" not in cfg.model.transformer.encoder:
        raise ValueError(
            f"{config_file}: model.transformer.encoder is not swappable (build it "
            "with focus_detr.modeling.encoders.swappable_encoder)"
        )
    overrides = [f"model.transformer.encoder.name={encoder}"]
    if keep_ratio is not None:
        overrides.append(f"model.transformer.encoder.keep_ratio={keep_ratio}")
    return apply_overrides(cfg, overrides + list(opts), inference_config_keys(cfg))


def build_model(cfg, device: str, seed: int) -> nn.Module:
    from focus_detr.modeling import instantiate_model

    torch.manual_seed(seed)
    return instantiate_model(cfg.model).to(device)


# ------------------------------------------------------------------------------------ costs
def count_flops(model: nn.Module, image: torch.Tensor) -> Dict[str, float]:
    """GFLOPs of one eval-mode forward, total and per model part (`focus_detr.analysis.flops`:
    fvcore, deformable attention counted by its FLOP handle)."""
    from focus_detr.analysis.flops import flop_analysis, model_part_counts

    model.eval()
    with torch.no_grad():
        parts = model_part_counts(flop_analysis(model, [image]), model)
    return {
        "gflops": parts.pop("total") / 1e9,
        **{f"gflops_{k}": v / 1e9 for k, v in parts.items()},
    }


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_latency(model: nn.Module, image: torch.Tensor, warmup: int, repeats: int) -> float:
    """Seconds of one full inference (preprocessing to detections), batch 1: the best of
    `repeats` runs after `warmup` (the least disturbed by other load on the machine), timed by
    `focus_detr.analysis.latency` (CUDA synchronized)."""
    from focus_detr.analysis.latency import measure_interleaved

    model.eval()
    inputs = [{"image": image}]
    times = measure_interleaved(
        {"model": lambda: model(inputs)},
        rounds=repeats,
        warmup=warmup,
        devices={"model": image.device},
    )["model"].total
    return min(times)


# ---------------------------------------------------------------------------- train / eval
def _progress_hook(iters: int, label: str, min_interval_s: float):
    """A detectron2 hook printing the training iteration, loss and ETA (the sweep's training is
    otherwise silent for minutes)."""
    from detectron2.engine import HookBase

    from focus_detr.cli import Progress

    class TrainingProgress(HookBase):
        def before_train(self):
            self.progress = Progress(iters, label, min_interval_s)

        def after_step(self):
            history = self.trainer.storage.histories().get("total_loss")
            loss = f"total_loss {history.latest():.3f}" if history is not None else ""
            self.progress.update(self.trainer.iter + 1, loss)

    return TrainingProgress()


def train(
    model: nn.Module,
    cfg,
    iters: int,
    seed: int,
    label: str = "training",
    progress_interval_s: float = 10.0,
) -> Dict[str, float]:
    """Train `iters` iterations with the config's optimizer, clipping and (rescaled) lr
    schedule, same seed and data order for every model. Returns mean losses of the first and
    last fifth of the run."""
    from detectron2.utils.env import seed_all_rng

    from focus_detr.engine.launch import train as train_run

    seed_all_rng(seed)
    cfg = copy.deepcopy(cfg)
    cfg.train.max_iter = iters
    cfg.train.device = str(next(model.parameters()).device)  # where the sweep built the model
    trainer = train_run(
        cfg, model=model, hooks=[_progress_hook(iters, label, progress_interval_s)], save=False
    ).trainer
    history = trainer.storage.histories()
    span = max(1, iters // 5)
    summary = {}
    for name in ("total_loss", "loss_mask_prediction", "select_loss"):
        if name in history:
            values = [v for v, _ in history[name].values()]
            summary[f"{name}_first"] = sum(values[:span]) / len(values[:span])
            summary[f"{name}_last"] = sum(values[-span:]) / len(values[-span:])
    return summary


def _test_dataset(cfg, num_images: Optional[int]):
    from detectron2.config import instantiate

    dataset = instantiate(cfg.dataloader.test.dataset)
    return dataset[:num_images] if num_images else dataset


def evaluate(model: nn.Module, cfg, dataset, verbose: bool = False) -> Dict[str, float]:
    """Box AP (the config's box evaluator) and the foreground recall of the kept tokens
    (`TokenSelectionEvaluator`: Focus-DETR's label assignment, counts summed over the images) on
    `dataset` (dataset dicts of the config's test set), one image at a time with the test
    resizing, in one pass.

    The recall is reported as the mean over the encoder layers and for the first layer (a dense
    encoder updates every token: 1.0), with the first layer's recall per feature level.
    """
    from detectron2.config import instantiate

    from focus_detr.analysis.selection import record_token_selection
    from focus_detr.evaluation import TokenSelectionEvaluator

    mapper_cfg = copy.deepcopy(cfg.dataloader.test.mapper)
    mapper_cfg.is_train = True  # keep the annotations; no crop branch: the test resizing
    mapper_cfg.augmentation_with_crop = None
    mapper = instantiate(mapper_cfg)
    evaluator_cfg = copy.deepcopy(cfg.dataloader.evaluator)
    if "evaluators" in evaluator_cfg:  # with_token_selection: ours runs on every encoder below
        evaluator_cfg = evaluator_cfg.evaluators[0]
    evaluator_cfg.output_dir = None
    evaluators = [instantiate(evaluator_cfg), TokenSelectionEvaluator(distributed=False)]
    selects = False  # a dense encoder reports no selection (and keeps every token)
    for evaluator in evaluators:
        evaluator.reset()
    model.eval()
    with torch.no_grad(), record_token_selection(model):
        for record in dataset:
            batch = [mapper(record)]
            outputs = model(batch)
            selects = selects or "token_selection" in outputs[0]
            for evaluator in evaluators:
                evaluator.process(batch, outputs)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        results = evaluators[0].evaluate(img_ids=[d["image_id"] for d in dataset])
        selection = evaluators[1].evaluate().get("token_selection", {}) if selects else {}
    box = results.get("bbox", {}) if results else {}
    row = {k: float(box[k]) for k in ("AP", "AP50", "APs", "APm", "APl") if k in box}
    layers = [
        v / 100 for k, v in selection.items() if k.startswith("layer") and k.endswith("_recall")
    ]
    levels = {
        k: v / 100 for k, v in selection.items() if k.startswith("level") and k.endswith("_recall")
    }
    if not selects:
        layers, levels = [1.0], {}
    row.update(fg_recall_mean=sum(layers) / len(layers), fg_recall_first=layers[0])
    row.update({f"fg_{k}": v for k, v in levels.items()})
    return row


# ------------------------------------------------------------------------------------ sweep
def load_shared_init(model: nn.Module, shared_init: Dict[str, torch.Tensor], name: str) -> None:
    """Load the reference weights outside the encoder into `model`; raise unless they cover
    every parameter and buffer outside `transformer.encoder.` and all fit the model."""
    result = model.load_state_dict(shared_init, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("transformer.encoder.")]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{name}: keys outside the encoder differ from the reference model's: missing "
            f"{missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def sweep(args) -> List[Dict[str, Any]]:
    from focus_detr.analysis.model_io import describe_encoder, keep_description
    from focus_detr.engine.checkpoint import SafeDetectionCheckpointer

    device = args.device
    generator = torch.Generator().manual_seed(args.seed)
    image = (torch.rand(3, *args.image_size, generator=generator) * 255).to(device)
    checkpoints = dict(c.split("=", 1) for c in args.checkpoint)
    dataset = None
    shared_init = None
    if args.train_iters:  # every model starts from the same weights outside the encoder
        reference = build_model(
            load_config(args.config_file, "dense", None, args.opts), "cpu", args.seed
        )
        shared_init = {
            k: v
            for k, v in reference.state_dict().items()
            if not k.startswith("transformer.encoder.")
        }
        del reference
    rows = []
    for encoder in args.encoders:
        ratios = [None] if encoder == "dense" else args.keep_ratios
        for ratio in ratios:
            name = model_name(encoder, ratio)
            cfg = load_config(args.config_file, encoder, ratio, args.opts)
            model = build_model(cfg, device, args.seed)
            print(f"[{name}] {keep_description(describe_encoder(model))}", flush=True)
            row: Dict[str, Any] = {
                "encoder": encoder,
                "keep_ratio": ratio,
                "params_m": count_params(model) / 1e6,
            }
            if not args.no_flops:
                print(f"[{name}] counting GFLOPs (fvcore traces the model) ...", flush=True)
                row.update(count_flops(model, image))
            if not args.no_latency:
                row["latency_s"] = measure_latency(model, image, args.warmup, args.repeats)
            if name in checkpoints:  # given weights are evaluated as they are, not trained on
                SafeDetectionCheckpointer(model, strict=True).load(checkpoints[name])
            elif args.train_iters:
                load_shared_init(model, shared_init, name)
                row.update(
                    train(
                        model,
                        cfg,
                        args.train_iters,
                        args.seed,
                        label=f"[{name}] training iteration",
                    )
                )
            if name in checkpoints or args.train_iters:
                if dataset is None:
                    dataset = _test_dataset(cfg, args.eval_images)
                row.update(evaluate(model, cfg, dataset, args.verbose))
            paper = PAPER.get((encoder, None if ratio is None else round(ratio, 2)))
            if paper is not None and args.show_paper:
                row.update(paper_ap=paper[0], paper_gflops=paper[1], paper_fps=paper[2])
            rows.append(row)
            print(
                f"[{name}] "
                + ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                ),
                flush=True,
            )
            del model
            gc.collect()
    return rows


COLUMNS = [  # (key, header, format)
    ("encoder", "encoder", "{}"),
    ("keep_ratio", "keep", "{:g}"),
    ("gflops", "GFLOPs", "{:.2f}"),
    ("gflops_encoder", "enc GFLOPs", "{:.2f}"),
    ("params_m", "params (M)", "{:.2f}"),
    ("latency_s", "latency (s)", "{:.3f}"),
    ("AP", "AP", "{:.1f}"),
    ("AP50", "AP50", "{:.1f}"),
    ("APs", "APs", "{:.1f}"),
    ("APm", "APm", "{:.1f}"),
    ("APl", "APl", "{:.1f}"),
    ("fg_recall_mean", "fg recall", "{:.3f}"),
    ("fg_recall_first", "fg recall L0", "{:.3f}"),
    ("paper_gflops", "paper GFLOPs", "{}"),
    ("paper_fps", "paper FPS", "{}"),
    ("paper_ap", "paper AP", "{}"),
]


def format_table(rows: List[Dict[str, Any]], show_paper: bool) -> str:
    from tabulate import tabulate

    columns = [
        c
        for c in COLUMNS
        if any(c[0] in r for r in rows) and (show_paper or not c[0].startswith("paper"))
    ]
    body = [
        [fmt.format(r[key]) if r.get(key) is not None else "-" for key, _, fmt in columns]
        for r in rows
    ]
    return tabulate(body, headers=[h for _, h, _ in columns], tablefmt="pipe")


# why a row's value can be undefined (null in the JSON files)
UNDEFINED_REASONS = {
    "APs": "no small ground-truth box in the evaluated images",
    "APm": "no medium ground-truth box in the evaluated images",
    "APl": "no large ground-truth box in the evaluated images",
    "AP": "no ground-truth box in the evaluated images",
    "AP50": "no ground-truth box in the evaluated images",
}


def _with_reasons(row: Dict[str, Any]) -> Dict[str, Any]:
    """A JSON-ready row with "undefined": {key: reason} for its null values."""
    undefined = {
        k: UNDEFINED_REASONS.get(k, "not a finite number")
        for k, v in row.items()
        if v is None and k != "keep_ratio"
    }
    return {**row, "undefined": undefined} if undefined else row


def result_records(args, rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The rows as records of the tools' results file (`focus_detr.analysis.results`): one per
    model, keyed by the config and the encoder overrides that select the model."""
    records = []
    for row in rows:
        encoder, ratio = row["encoder"], row["keep_ratio"]
        overrides = [f"model.transformer.encoder.name={encoder}"]
        if ratio is not None:
            overrides.append(f"model.transformer.encoder.keep_ratio={ratio}")
        checkpoints = dict(c.split("=", 1) for c in args.checkpoint)
        record = {
            "config": args.config_file,
            "overrides": overrides + list(args.opts),
            "method": encoder,
            "keep_ratio": ratio,
            "gflops": row.get("gflops"),
            "params_m": row.get("params_m"),
            "latency_s": row.get("latency_s"),
            "ap": row.get("AP"),
            "device": args.device,
            "input_size": list(args.image_size),
            "checkpoint": checkpoints.get(model_name(encoder, ratio)),
            "train_iters": None if model_name(encoder, ratio) in checkpoints else args.train_iters,
            "tool": "sweep_keep_ratio",
        }
        records.append({k: v for k, v in record.items() if v is not None})
    return records


def main(argv=None) -> List[Dict[str, Any]]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    import focus_detr.data  # noqa: F401  (registers the built-in dataset)

    print(
        f"config {args.config_file}; image {args.image_size[0]}x{args.image_size[1]}, "
        f"batch 1, device {args.device}, {torch.get_num_threads()} CPU threads; "
        "deformable attention counted by MSDA_FLOP_HANDLES (5 multiply-adds per channel)",
        flush=True,
    )
    rows = sweep(args)
    print(format_table(rows, args.show_paper))
    if args.output:
        from focus_detr.analysis.results import json_ready

        Path(args.output).write_text(
            json.dumps([_with_reasons(r) for r in json_ready(rows)], indent=1, allow_nan=False)
        )
    if args.results:
        from focus_detr.analysis.results import append_result

        for record in result_records(args, rows):
            append_result(args.results, record)
        print(
            f"Appended {len(rows)} record(s) to {args.results} (tools/plot_ap_flops.py "
            f"--results {args.results} --output ap_vs_gflops.png)"
        )
    return rows


if __name__ == "__main__":
    main()
