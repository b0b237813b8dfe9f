"""Short trainings of tiny Focus-DETR variants on the built-in dataset: the foreground loss, the
foreground recall of the kept tokens (the fraction of ground-truth-labelled tokens each encoder
layer keeps) and box AP on validation images, per variant.

Used for the README's ablation of the top-down modulation:

    python projects/focus_detr/tools/selection_ablation.py --iters 600 \
        --variant published model.transformer.encoder.selector.modulation_target=features \
        --variant logits model.transformer.encoder.selector.modulation_target=logits \
        --variant none model.transformer.encoder.selector.modulation=none

and by tests/test_focus_learning.py. Variants share the seed, data order and schedule.
"""

import argparse
import contextlib
import io
import json
import time
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.samplers import TrainingSampler
from detectron2.utils.events import EventStorage

from focus_detr.data import DetrDatasetMapper, get_detection_dataset_dicts
from focus_detr.engine.config import load_config as load_strict_config
from focus_detr.evaluation import kept_foreground_recall
from focus_detr.modeling import instantiate_model
from focus_detr.modeling.inference import inference_config_keys

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "projects/focus_detr/configs/focus_detr_tiny_synthetic.py"


def load_config(overrides: Sequence[str] = (), config: Path = CONFIG):
    """The config with a variant's `key=value` overrides (an unknown key is an error, as in
    train_net: a misspelled key would otherwise train the published variant silently)."""
    return load_strict_config(
        config, overrides, required=("model", "optimizer"), extra_keys=inference_config_keys
    )


def _mapper(short_sides, max_size, train):
    augs = [
        T.ResizeShortestEdge(
            short_edge_length=tuple(short_sides), max_size=max_size, sample_style="choice"
        )
    ]
    if train:
        augs = [T.RandomFlip()] + augs
    # is_train=True keeps the annotations (evaluation images need them for the recall)
    return DetrDatasetMapper(augs, None, is_train=True, img_format="RGB")


def _batches(dataset, mapper, batch_size, seed):
    sampler = iter(TrainingSampler(len(dataset), shuffle=True, seed=seed))
    while True:
        batch = []
        while len(batch) < batch_size:
            item = mapper(dataset[next(sampler)])
            if item is not None and len(item["instances"]) > 0:
                batch.append(item)
        yield batch


def evaluate(model, batches, dataset_name: str) -> Dict[str, float]:
    """AP / AP50 (COCO API), foreground loss and per-layer kept foreground recall on `batches`
    (mapped validation images with their annotations)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    meta = MetadataCatalog.get(dataset_name)
    to_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    encoder = model.transformer.encoder
    detections, image_ids, hits, positives, select = [], [], None, 0, []
    model.eval()
    with torch.no_grad():
        for batch in batches:
            images = model.preprocess_image(batch)
            out = model.compute_outputs(images)
            selection = out["encoder_output"].selection
            targets = model.prepare_targets(batch)
            labels = encoder.foreground_loss.labels(
                [t["boxes_xyxy"] for t in targets], selection.spatial_shapes, selection.padding_mask
            )
            select.append(float(encoder.losses(out, targets)["select_loss"]))
            recall = kept_foreground_recall(selection, labels)
            count = int(labels.sum())
            hits = recall * count if hits is None else hits + recall * count
            positives += count
            results = model.postprocess(
                out["pred_logits"], out["pred_boxes"], images.image_sizes, batch
            )
            for item, result in zip(batch, results):
                image_ids.append(item["image_id"])
                inst = result["instances"]
                for box, score, cls in zip(
                    inst.pred_boxes.tensor.tolist(),
                    inst.scores.tolist(),
                    inst.pred_classes.tolist(),
                ):
                    detections.append(
                        {
                            "image_id": item["image_id"],
                            "category_id": to_id[cls],
                            "score": score,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                        }
                    )
    model.train()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(meta.json_file)
        ap = ap50 = 0.0
        if detections:
            ev = COCOeval(gt, gt.loadRes(detections), "bbox")
            ev.params.imgIds = image_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            ap, ap50 = 100 * ev.stats[0], 100 * ev.stats[1]
    return {
        "AP": ap,
        "AP50": ap50,
        "select_loss": sum(select) / len(select),
        "kept_recall": [round(float(r), 4) for r in hits / max(positives, 1)],
    }


def train_and_evaluate(
    overrides: Sequence[str] = (),
    iters: int = 300,
    batch_size: int = 4,
    train_short_sides: Sequence[int] = (160, 176, 192, 208, 224),
    test_short_side: int = 192,
    max_size: int = 320,
    eval_images: int = 100,
    eval_every: int = 0,
    lr: float = 4e-4,
    seed: int = 0,
    log=print,
) -> Dict[str, object]:
    """Train the tiny config (with `overrides`) for `iters` steps and evaluate.

    Returns dict: `history` (per evaluation: iteration, AP, AP50, val select_loss, kept_recall
    per layer, train select_loss averaged since the previous evaluation), `keep_ratio`, `seconds`.
    """
    torch.manual_seed(seed)
    cfg = load_config(overrides)
    model = instantiate_model(cfg.model)
    model.train()
    cfg.optimizer.params.model = model
    cfg.optimizer.lr = lr
    optimizer = instantiate(cfg.optimizer)
    train_set = get_detection_dataset_dicts("synthetic_shapes_train")
    val_name = "synthetic_shapes_val"
    val_set = get_detection_dataset_dicts(val_name, filter_empty=False)[:eval_images]
    val_mapper = _mapper([test_short_side], max_size, train=False)
    val_batches = [[val_mapper(d) for d in val_set[i : i + 4]] for i in range(0, len(val_set), 4)]
    batches = _batches(
        train_set, _mapper(train_short_sides, max_size, train=True), batch_size, seed
    )
    history, window, start = [], [], time.time()
    eval_at = set(range(0, iters + 1, eval_every)) if eval_every else {0, iters}
    with EventStorage(0):
        for it in range(iters + 1):
            if it in eval_at:
                row = {
                    "iter": it,
                    **evaluate(model, val_batches, val_name),
                    "train_select_loss": sum(window) / len(window) if window else None,
                    "elapsed": round(time.time() - start, 1),
                }
                history.append(row)
                window = []
                log(json.dumps(row))
            if it == iters:
                break
            losses = model(next(batches))
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
            window.append(losses["select_loss"].item())
    selector = model.transformer.encoder.selector
    coefficients = selector.modulation_coefficients
    return {
        "history": history,
        "keep_ratio": selector.keep_ratio,
        "modulation_coefficients": None
        if coefficients is None
        else [round(float(c), 4) for c in coefficients.detach()],
        "layer_keep_fractions": [
            round(float(c) * selector.foreground_ratio, 3) for c in selector.cascade_ratios
        ],
        "seconds": round(time.time() - start, 1),
    }


def main(argv: List[str] = None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        metavar=("NAME", "OVERRIDE"),
        help="a variant: its name, then config overrides (repeatable)",
    )
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--eval-images", type=int, default=100)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument(
        "--train-sizes",
        type=int,
        nargs="+",
        default=[160, 176, 192, 208, 224],
        help="training short sides (one drawn per image)",
    )
    parser.add_argument("--test-size", type=int, default=192, help="evaluation short side")
    parser.add_argument("--max-size", type=int, default=320, help="longest side limit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--output", type=str, default="", help="write all results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = args.variant or [["published"]]
    results = {}
    for name, *overrides in variants:
        print(f"== {name}: {' '.join(overrides) or '(defaults)'}", flush=True)
        results[name] = train_and_evaluate(
            overrides,
            args.iters,
            args.batch_size,
            args.train_sizes,
            args.test_size,
            args.max_size,
            eval_images=args.eval_images,
            eval_every=args.eval_every,
            lr=args.lr,
            seed=args.seed,
            log=lambda s: print(s, flush=True),
        )
    print(
        "\n| variant | AP | AP50 | val select_loss | kept foreground recall per layer | "
        "coefficients | train s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        last = r["history"][-1]
        print(
            f"| {name} | {last['AP']:.1f} | {last['AP50']:.1f} | {last['select_loss']:.3f} | "
            f"{', '.join(f'{x:.2f}' for x in last['kept_recall'])} "
            f"(keeps {', '.join(map(str, r['layer_keep_fractions']))}) | "
            f"{r['modulation_coefficients']} | {r['seconds']:.0f} |"
        )
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
