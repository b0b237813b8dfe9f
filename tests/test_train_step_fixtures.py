"""One training step of our DINO-R50 and Focus-DETR-R50 against the published code's, on a batch
of two same-size images and on a padded batch (`shared/fixtures/*_train*_detrex.pt`; the parts
compared are in tests/fixtures/r50_train_steps.pt, made by make_train_step_subset.py).

Every loss term by name, the total and every parameter gradient (norm, the stored random
projections and, for the small tensors, the whole gradient), by published key; for Focus-DETR
also the selector stage by stage. The R50 configs train with `model.transformer.padding=
"published"`; with "masked" the padded Focus-DETR step is measurably different (a test checks
that the switch reaches every part it names). Tolerances are the fixture README's: measured
noise of the published step x >= 7 (losses 1e-4 relative, gradient norms 5e-3 relative,
projections and full gradients 5e-2 of the reference norm, the modulation coefficients'
gradient absolutely where its norm is ~1e-5, logits 1e-3).
"""

import zlib
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from focus_detr.engine.config import apply_overrides
from detectron2.structures import Boxes, Instances

from focus_detr.engine.published_checkpoints import apply_key_aliases
from reference_keys import load_synthesized

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "r50_train_steps.pt"
CONFIGS = {
    "dino": REPO / "projects/dino/configs/models/dino_r50.py",
    "focus_detr": REPO / "projects/focus_detr/configs/models/focus_detr_r50.py",
}
NAMES = (
    "dino_r50_train",
    "dino_r50_train_padded",
    "focus_detr_r50_train",
    "focus_detr_r50_train_padded",
)
LOSS_RTOL, NORM_RTOL, PROJ_TOL, ALPHA_ATOL, LOGIT_ATOL = 1e-4, 5e-3, 5e-2, 1e-6, 1e-3
# below this gradient norm the modulation coefficients are compared absolutely (README)
TINY_NORM = 1e-4
ALPHA_KEY = "transformer.alpha"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fixtures():
    return torch.load(FIXTURE, weights_only=True)


def build_model(name, fx, directory, padding="published"):
    arch = "focus_detr" if name.startswith("focus_detr") else "dino"
    cfg = LazyConfig.load(str(CONFIGS[arch]))
    cfg = apply_overrides(
        cfg,
        [
            "model.denoising.label_noise_ratio=0.0",
            "model.denoising.box_noise_scale=0.0",
            f"model.transformer.padding={padding}",
        ],
    )
    model = instantiate(cfg.model)
    load_synthesized(
        model,
        f"{arch}_r50_detrex_keys.tsv",
        fx["aliases"],
        fx["meta"]["salt"],
        fx["meta"]["constant_rows"],
        directory,
    )
    return model.train()


def run_step(model, fx):
    """(losses {name: float}, total float, {param name: grad}, the transformer's output dict)."""
    batch = []
    for image, target in zip(fx["images"], fx["targets"]):
        h, w = image.shape[1:]
        inst = Instances((h, w), gt_boxes=Boxes(target["boxes_xyxy"]), gt_classes=target["classes"])
        batch.append({"image": image, "height": h, "width": w, "instances": inst})
    captured = {}
    hook = model.transformer.register_forward_hook(
        lambda module, args, out: captured.setdefault("out", out)
    )
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    try:
        losses = model(batch)
    finally:
        hook.remove()
    total = sum(losses.values())
    total.backward()
    grads = {k: p.grad for k, p in model.named_parameters(remove_duplicate=False)}
    return (
        {k: float(v.detach()) for k, v in losses.items()},
        float(total.detach()),
        grads,
        captured["out"],
    )


@pytest.fixture(scope="module")
def steps(fixtures, tmp_path_factory):
    cache = {}

    def get(name, padding="published"):
        if (name, padding) not in cache:
            fx = fixtures[name]
            model = build_model(name, fx, tmp_path_factory.mktemp(name), padding)
            cache[(name, padding)] = (model, run_step(model, fx))
        return cache[(name, padding)]

    return get


def our_gradient(key, grads, model_keys):
    """The gradient of the parameter that received published key `key`'s weights."""
    if key in grads:
        return grads[key]
    renamed = apply_key_aliases({key: None}, model_keys)
    assert len(renamed) == 1, f"published key {key} maps to no parameter"
    return grads[next(iter(renamed))]


def projections(key, grad):
    g = torch.Generator().manual_seed(zlib.crc32(("train-proj:" + key).encode()))
    return torch.randn(3, grad.numel(), generator=g, dtype=torch.float64) @ grad.double().reshape(
        -1
    )


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_term_and_total(fixtures, steps, name):
    ref = fixtures[name]
    _, (losses, total, _, _) = steps(name)
    assert sorted(losses) == sorted(ref["losses"])
    errors = {k: abs(losses[k] - v) / abs(v) for k, v in ref["losses"].items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] < LOSS_RTOL, (
        f"{worst}: ours {losses[worst]} published {ref['losses'][worst]}"
    )
    assert abs(total - ref["total"]) / abs(ref["total"]) < LOSS_RTOL


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gradient(fixtures, steps, name):
    ref = fixtures[name]
    model, (_, _, grads, _) = steps(name)
    model_keys = set(model.state_dict())
    failures = []
    for key, entry in ref["grads"].items():
        grad = our_gradient(key, grads, model_keys)
        if entry["is_none"]:
            if grad is not None:
                failures.append(f"{key}: has a gradient, the published one has none")
            continue
        if grad is None:
            failures.append(f"{key}: no gradient")
            continue
        norm = float(grad.double().norm())
        if key == ALPHA_KEY and entry["norm"] < TINY_NORM:
            error = float((grad.double().reshape(-1) - entry["full"].reshape(-1)).abs().max())
            if error > ALPHA_ATOL:
                failures.append(f"{key}: max abs error {error:.3g}")
            continue
        if abs(norm - entry["norm"]) > NORM_RTOL * entry["norm"]:
            failures.append(f"{key}: norm {norm:.6g} vs {entry['norm']:.6g}")
        if "proj" in entry:
            error = float((projections(key, grad) - entry["proj"]).abs().max()) / entry["norm"]
            if error > PROJ_TOL:
                failures.append(f"{key}: projections off by {error:.3g} of the norm")
        if "full" in entry:
            error = float((grad.double().reshape(entry["full"].shape) - entry["full"]).abs().max())
            if error > PROJ_TOL * entry["norm"]:
                failures.append(f"{key}: full gradient off by {error / entry['norm']:.3g}")
        if "rowsum" in entry:  # tgt_embed: rows in proposal order (README); order-free summaries
            rows = grad.double().reshape(entry["sorted_row_norms"].shape[0], -1)
            rowsum_error = float((rows.sum(0) - entry["rowsum"]).abs().max())
            row_norms = rows.norm(dim=1).sort().values
            if (
                rowsum_error > PROJ_TOL * entry["norm"]
                or float((row_norms - entry["sorted_row_norms"]).abs().max())
                > PROJ_TOL * entry["norm"]
            ):
                failures.append(f"{key}: row sums / sorted row norms differ")
    assert not failures, f"{len(failures)} of {len(ref['grads'])} gradients differ:\n" + "\n".join(
        failures[:20]
    )


@pytest.mark.parametrize("name", NAMES)
def test_proposal_sets(fixtures, steps, name):
    ref = fixtures[name]["intermediates"]["proposal_tokens_sorted"]
    _, (_, _, _, out) = steps(name)
    ours = out["enc_topk_indices"].sort(1).values
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("name", ["focus_detr_r50_train", "focus_detr_r50_train_padded"])
def test_focus_selector_stage_by_stage(fixtures, steps, name):
    ref = fixtures[name]["intermediates"]
    model, (_, _, _, out) = steps(name)
    record = out["encoder_output"].selection
    selection = out["encoder_output"].extras["foreground_selection"]
    # logits of every token, padded ones included (published pooling over the padded canvas)
    logits = selection.logits.detach()
    assert (logits - ref["fts_logits"][..., 0]).abs().max() < LOGIT_ATOL
    encoder = model.transformer.encoder
    boxes = [t["boxes_xyxy"] for t in fixtures[name]["targets"]]
    labels = encoder.foreground_loss.labels(boxes, record.spatial_shapes, record.padding_mask)
    assert torch.equal(labels, ref["foreground_labels"][..., 0].bool())
    assert selection.foreground_token_counts.tolist() == list(ref["focus_token_nums"])
    processed = selection.keep_counts
    assert (processed == torch.tensor(ref["encoder_keep_counts"])[None]).all()
    assert selection.write_counts.t().tolist() == [list(c) for c in ref["scattered_back_counts"]]
    for layer, (index, written) in enumerate(zip(record.kept_index, record.kept_valid)):
        processed_ref = ref["encoder_foreground_inds"][layer]
        assert torch.equal(index.sort(1).values, processed_ref.sort(1).values), f"layer {layer}"
        # written back: each image's prefix of its processed ranking
        assert written.sum(1).tolist() == list(ref["scattered_back_counts"][layer])
        objects = record.object_index[layer]
        assert torch.equal(
            objects.sort(1).values, ref["encoder_oesm_token_inds"][layer].sort(1).values
        ), f"layer {layer}"


def test_masked_padding_changes_the_padded_focus_step(fixtures, steps):
    """The switch reaches the loss, the pooling/upsampling and the counts: with "masked" the
    padded step differs from the published one where the README says it must."""
    name = "focus_detr_r50_train_padded"
    ref = fixtures[name]
    _, (losses, _, _, out) = steps(name, padding="masked")
    selection = out["encoder_output"].extras["foreground_selection"]
    # own counts per image (image 1 smaller), written back in full
    assert torch.equal(selection.write_counts, selection.keep_counts)
    assert selection.keep_counts[1, 0] < selection.keep_counts[0, 0]
    # valid-only pooling moves image 1's valid logits (README: by up to 0.87 .. 5.93)
    valid = ~ref["intermediates"]["mask_flatten"][1]
    moved = selection.logits.detach()[1, valid] - ref["intermediates"]["fts_logits"][1, valid, 0]
    assert moved.abs().max() > 0.1
    assert abs(losses["select_loss"] - ref["losses"]["select_loss"]) > 100 * LOSS_RTOL * abs(
        ref["losses"]["select_loss"]
    )
