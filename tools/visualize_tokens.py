#!/usr/bin/env python
"""Draw a sparse encoder's token selection (paper Figs. 1, 4, 6) and measure its quality.

    python tools/visualize_tokens.py --config-file projects/focus_detr/configs/focus_detr_tiny_synthetic.py \\
        --dataset-samples 4 --output out/tokens train.init_checkpoint=model_final.pth
    python tools/visualize_tokens.py --config-file focus.py train.init_checkpoint=focus.pth \\
        --compare-config sparse.py train.init_checkpoint=sparse.pth --input img.jpg --output out

Per image, PNG files (panels on the model's input image, slightly darkened, enlarged to at least
384 px wide, one colour legend per figure; level colours differ from the agreement colours):
- `<name>_levels.png` (Figs. 4 / 6a): per feature level, the tokens kept by the first encoder
  layer (the foreground selection), then, with ground truth (dataset samples), the foreground
  labels of Focus-DETR's label assignment and their agreement (green: kept foreground, red: kept
  background, blue: missed foreground) with precision (P) and recall (R);
- `<name>_layers.png` (Fig. 6b): per encoder layer, the kept tokens and (Focus) the object tokens,
  as dots coloured by level;
- `<name>_compare.png` (Fig. 1), with `--compare-config`: the ground truth, the other model's
  selection (e.g. Sparse DETR) and this one's, side by side;
and `selection_metrics.json`: precision/recall per image, layer (`layer{j}`: kept tokens,
`object{j}`: Focus's object tokens) and level (`level{i}_precision`, `level{i}_recall`), and over
all images (with `--compare-config`, each image's "compare" entry holds both models' first-layer
selection metrics under "config" and "compare_config"). A ratio without a denominator (e.g. no
foreground token at a level) is null, with the reason under "undefined".
Without a checkpoint the model is randomly initialized (a warning says so): the drawings then
show an untrained selector.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

from focus_detr.cli import filter_known_warnings, tool_parser  # noqa: E402

filter_known_warnings()  # before torch/detectron2 import: their import-time warnings


DEFAULT_STRIDES = (8, 16, 32, 64)


def parse_args(argv=None):
    p = tool_parser(__doc__)
    p.add_argument(
        "--config-file",
        required=True,
        nargs="+",
        metavar="PATH [key=value ...]",
        help="config of the model to draw (Focus or Sparse DETR) and its overrides",
    )
    p.add_argument(
        "--compare-config",
        nargs="+",
        metavar="PATH [key=value ...]",
        help="a second model (e.g. Sparse DETR) drawn beside it (Fig. 1)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", help="image files or folders")
    src.add_argument(
        "--dataset-samples",
        type=int,
        metavar="N",
        help="the first N test images of the config's dataset (with ground truth)",
    )
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument(
        "--layer",
        type=int,
        default=0,
        help="encoder layer whose kept tokens the level figure shows (default 0)",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    args = p.parse_args(argv)
    if args.dataset_samples is not None and args.dataset_samples <= 0:
        p.error("--dataset-samples must be positive")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answered before torch and detectron2 load

import torch  # noqa: E402

import focus_detr.data  # noqa: E402,F401  (registers the built-in dataset)
from focus_detr.analysis import (
    build_model,
    dataset_inputs,
    describe_encoder,  # noqa: E402
    image_list,
    load_config,
    resolve_device,
)
from focus_detr.analysis.drawing import (
    AGREEMENT_COLORS,
    GROUND_TRUTH_COLOR,
    LEVEL_COLORS,
    dim,  # noqa: E402
    draw_boxes,
    draw_token_dots,
    level_legend,
    level_masks,
    overlay_cells,
    save_grid,
    to_hwc_uint8,
)
from focus_detr.analysis.model_io import image_file_inputs, keep_description  # noqa: E402
from focus_detr.evaluation import foreground_labels, level_of_tokens, selection_counts  # noqa: E402


def _build(spec, device):
    cfg = load_config(spec[0], spec[1:])
    checkpoint = cfg.train.get("init_checkpoint", None) or None
    model = build_model(cfg, device, checkpoint)
    info = describe_encoder(model)
    if info["method"] == "dense":
        raise SystemExit(
            f"{spec[0]}: the model's encoder ({info['encoder']}) keeps every token; "
            "give a Focus-DETR or Sparse DETR config"
        )
    info["weights"] = checkpoint or "random init"
    print(f"{spec[0]}: {info['method']} encoder, {keep_description(info)}")
    return cfg, model, info


@torch.no_grad()
def select(model, x):
    """Input `x`'s `TokenSelection` (a batch of one), with the neck's strides (or the default
    ones) where the encoder was not told them."""
    batch = image_list(model, [x])
    selection = model.compute_outputs(batch)["encoder_output"].selection
    if selection is None:
        raise SystemExit(
            f"the encoder {type(model.transformer.encoder).__name__} records no token selection"
        )
    selection = selection.per_image(0)
    if not selection.strides:
        selection.strides = list(getattr(model.neck, "strides", None) or DEFAULT_STRIDES)
    return selection


def _masks(selection):
    """{"layer": (layers, N) kept-token masks, "object": (layers, N) object-token masks} of a
    one-image selection, on the CPU."""
    return {
        "layer": selection.kept_masks()[:, 0].cpu(),
        "object": selection.object_masks()[:, 0].cpu(),
    }


def _pr(counts):
    o = counts.overall()
    return o["precision"], o["recall"]


def _fmt(value):
    return "-" if value is None or value != value else f"{value:.2f}"  # undefined -> "-"


def _metrics(selection, fg):
    """Per layer (and object tokens) overall and per-level precision/recall of one image."""
    shapes = selection.spatial_shapes.cpu()
    level = level_of_tokens(shapes)
    valid = selection.valid_tokens()[0].cpu()
    out = {}
    for kind, masks in _masks(selection).items():
        for j, kept in enumerate(masks):
            out[f"{kind}{j}"] = selection_counts(kept, fg, valid, level, shapes.shape[0])
    return out


def _dots(image, selection, mask):
    masks = level_masks(mask, selection.spatial_shapes)
    return draw_token_dots(dim(image), masks, selection.strides)


def draw_levels(path, image, selection, layer, fg, title):
    """Figure 4 / 6a: kept tokens per level (+ ground truth and agreement rows)."""
    shapes, strides = selection.spatial_shapes, selection.strides
    kept = level_masks(_masks(selection)["layer"][layer], shapes)
    valid = level_masks(selection.valid_tokens()[0], shapes)
    base = dim(image)
    rows = [
        [
            (
                overlay_cells(base, k, s, LEVEL_COLORS[l % len(LEVEL_COLORS)]),
                f"L{l} s{s}: kept {int(k.sum())}/{int(v.sum())}",
            )
            for l, (k, v, s) in enumerate(zip(kept, valid, strides))
        ]
    ]
    if fg is not None:
        fgm = level_masks(fg, shapes)
        rows.append(
            [
                (
                    overlay_cells(base, f, s, GROUND_TRUTH_COLOR),
                    f"L{l} ground truth: {int(f.sum())}",
                )
                for l, (f, s) in enumerate(zip(fgm, strides))
            ]
        )
        agreement = []
        for l, (k, f, s) in enumerate(zip(kept, fgm, strides)):
            panel = base
            for mask, color in (
                (k & f, AGREEMENT_COLORS["kept foreground"]),
                (k & ~f, AGREEMENT_COLORS["kept background"]),
                (~k & f, AGREEMENT_COLORS["missed foreground"]),
            ):
                panel = overlay_cells(panel, mask, s, color)
            tp = int((k & f).sum())
            p = tp / k.sum() if k.sum() else float("nan")
            r = tp / f.sum() if f.sum() else float("nan")
            agreement.append((panel, f"L{l} P {_fmt(p)} R {_fmt(r)}"))
        rows.append(agreement)
    legend = level_legend(len(strides), strides)
    if fg is not None:
        legend = (
            legend
            + [(GROUND_TRUTH_COLOR, "ground-truth foreground")]
            + [(color, meaning) for meaning, color in AGREEMENT_COLORS.items()]
        )
    return save_grid(path, rows, title, legend)


def draw_layers(path, image, selection, title):
    """Figure 6b: kept and object tokens per encoder layer (dots coloured by level)."""
    masks = _masks(selection)
    kept = [
        (_dots(image, selection, mask), f"layer {j}: {int(mask.sum())} kept")
        for j, mask in enumerate(masks["layer"])
    ]
    rows = [kept]
    if len(masks["object"]):
        rows.append(
            [
                (_dots(image, selection, mask), f"layer {j}: {int(mask.sum())} objects")
                for j, mask in enumerate(masks["object"])
            ]
        )
    strides = selection.strides
    return save_grid(path, rows, title, level_legend(len(strides), strides))


def draw_compare(path, image, panels, boxes, fg, selection, title):
    """Figure 1: ground truth, then each model's first-layer selection."""
    first = dim(image)
    caption = "input"
    if boxes is not None:
        first = draw_boxes(first, boxes)
        caption = f"ground truth: {boxes.shape[0]} boxes"
        if fg is not None:
            masks = level_masks(fg, selection.spatial_shapes)
            first = draw_token_dots(first, masks, selection.strides)
            caption += f", {int(fg.sum())} fg tokens"
    strides = selection.strides
    legend = level_legend(len(strides), strides)
    if boxes is not None:
        legend = [(GROUND_TRUTH_COLOR, "ground-truth box")] + legend
    return save_grid(path, [[(first, caption)] + panels], title, legend)


def _name(x, i):
    if "file_name" in x and not str(x["file_name"]).startswith("synthetic_"):
        return f"{i:03d}_{Path(x['file_name']).stem}"
    return f"{i:03d}_{x.get('image_id', 'image')}"


def _summary(counts):
    return {k: c.summary() for k, c in counts.items()}


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    cfg, model, info = _build(args.config_file, device)
    other = _build(args.compare_config, device) if args.compare_config else None
    if args.dataset_samples:
        inputs = dataset_inputs(cfg, args.dataset_samples, with_annotations=True)
    else:
        inputs = image_file_inputs(cfg, args.input)
    os.makedirs(args.output, exist_ok=True)
    per_image, totals, written = [], {}, []
    for i, x in enumerate(inputs):
        name = _name(x, i)
        image = to_hwc_uint8(x["image"])
        selection = select(model, x)
        boxes = x["instances"].gt_boxes.tensor if "instances" in x else None
        fg = foreground_labels(selection, boxes) if boxes is not None else None
        if not 0 <= args.layer < selection.num_layers:
            raise SystemExit(f"--layer {args.layer}: the encoder has {selection.num_layers} layers")
        title = (
            f"{Path(args.config_file[0]).stem} ({info['method']}, {keep_description(info)}, "
            f"{info['weights']})"
        )
        record = {"image": x.get("file_name", name), "input_size": list(image.shape[:2])}
        written.append(os.path.join(args.output, f"{name}_levels.png"))
        draw_levels(
            written[-1],
            image,
            selection,
            args.layer,
            fg,
            title + f": layer {args.layer} kept tokens per level",
        )
        written.append(os.path.join(args.output, f"{name}_layers.png"))
        draw_layers(written[-1], image, selection, title + ": kept / object tokens per layer")
        if fg is not None:
            metrics = _metrics(selection, fg)
            record["selection"] = _summary(metrics)
            for k, c in metrics.items():
                totals[k] = c if k not in totals else totals[k] + c
        if other is not None:
            o_cfg, o_model, o_info = other
            o_sel = select(o_model, x)
            panels = []
            # keyed by role, not method: both models may be of one method (two checkpoints)
            for role, sel, inf in (
                ("compare_config", o_sel, o_info),
                ("config", selection, info),
            ):
                first_layer = _masks(sel)["layer"][0]
                caption = f"{inf['method']}: {int(first_layer.sum())} kept"
                if fg is not None:
                    m = _metrics(sel, fg)["layer0"]
                    p, r = _pr(m)
                    caption += f", P {_fmt(p)} R {_fmt(r)}"
                    record.setdefault("compare", {})[role] = {
                        "method": inf["method"],
                        "weights": inf["weights"],
                        **m.summary(),
                    }
                panels.append((_dots(image, sel, first_layer), caption))
            written.append(os.path.join(args.output, f"{name}_compare.png"))
            draw_compare(
                written[-1],
                image,
                panels,
                boxes,
                fg,
                selection,
                f"{Path(args.compare_config[0]).stem} vs {Path(args.config_file[0]).stem}",
            )
        per_image.append(record)
        if fg is not None:
            p, r = _pr(_metrics(selection, fg)[f"layer{args.layer}"])
            print(f"{name}: layer {args.layer} precision {_fmt(p)} recall {_fmt(r)}")
    metrics_path = os.path.join(args.output, "selection_metrics.json")
    with open(metrics_path, "w") as f:
        json.dump(
            {
                "config": args.config_file,
                "compare_config": args.compare_config,
                "weights": info["weights"],
                "images": per_image,
                "overall": _summary(totals),
            },
            f,
            indent=1,
            allow_nan=False,  # undefined ratios are null, their reason under "undefined"
        )
    written.append(metrics_path)
    if totals:
        o = totals[f"layer{args.layer}"].overall()
        print(
            f"Overall (layer {args.layer}, {len(inputs)} images): precision "
            f"{_fmt(o['precision'])}, recall {_fmt(o['recall'])}, keep fraction "
            f"{_fmt(o['keep_fraction'])}, foreground fraction {_fmt(o['foreground_fraction'])}"
        )
    print(f"Wrote {len(written)} files to {args.output}")
    return written


if __name__ == "__main__":
    main()
