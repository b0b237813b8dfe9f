"""`model.transformer.padding`: how training treats the padded tokens of a mixed-size batch.

"published" reproduces the published code (checked against its training steps in
test_train_step_fixtures.py); here the case those fixtures do not reach (the padded tokens' tie
group ranking inside the two-stage proposal cut), inference, batches of one, and the config key.
"""

import copy
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig

from focus_detr.engine.config import apply_overrides

from focus_detr.modeling import instantiate_model

from dino_utils import make_batch, tiny_model
from focus_detr.modeling import DINOTransformer
from focus_detr.modeling.focus import ForegroundLoss, ForegroundTokenSelector

REPO = Path(__file__).resolve().parents[1]
FOCUS_TINY = REPO / "projects/focus_detr/configs/models/focus_detr_tiny.py"
SIZES = [(128, 160), (96, 96)]  # image 1 is padded at every level
NUM_QUERIES = 30


def outputs_of(model, batch):
    """(loss dict, the transformer's output dict) of one forward."""
    captured = {}
    hook = model.transformer.register_forward_hook(lambda m, a, out: captured.setdefault("o", out))
    try:
        torch.manual_seed(0)
        result = model(batch)
    finally:
        hook.remove()
    return result, captured["o"]


def zero_memory_wins(model):
    """Make the proposal class head score the zeroed projected memory (every padded token, and
    valid tokens with an out-of-range proposal) above every other token, and return that score.

    The zeroed memory projects to p = enc_output_norm(enc_output.bias); a class-0 weight along p
    scores p highest among all LayerNorm outputs (fixed norm, max dot product when aligned)."""
    transformer = model.transformer
    with torch.no_grad():
        p = transformer.enc_output_norm(transformer.enc_output.bias)
        head = transformer.decoder.proposal_class_head
        head.weight.zero_()
        head.weight[0] = 4.0 * p / p.norm()
        head.bias.fill_(-20.0)
        head.bias[0] = 0.0
        return float(head(p).max())


def test_padded_tie_group_becomes_proposals_in_published_mode():
    model = tiny_model(num_queries=NUM_QUERIES).train()
    tie_score = zero_memory_wins(model)
    batch = make_batch(SIZES, [3, 2])
    results = {}
    for padding in ("published", "masked"):
        model.transformer.padding = padding
        losses, out = outputs_of(model, batch)
        padding_mask = out["encoder_inputs"].padding_mask
        chosen = out["enc_topk_indices"]
        results[padding] = losses, out, padding_mask.gather(1, chosen)
        total = sum(losses.values())
        assert all(torch.isfinite(v) for v in losses.values()), padding
        model.zero_grad(set_to_none=True)
        total.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    losses, out, padded_chosen = results["published"]
    # every token of image 1's tie group scores the zeroed memory's score; the group (padded
    # tokens) fills image 1's whole cut, and their boxes sit at sigmoid(+inf) = 1
    assert padded_chosen[1].all()
    assert torch.allclose(out["enc_topk_scores"][1], torch.tensor(tie_score), atol=1e-5)
    assert torch.equal(out["enc_boxes"][1], torch.ones_like(out["enc_boxes"][1]))
    masked_losses, masked_out, masked_padded_chosen = results["masked"]
    assert not masked_padded_chosen.any()
    # image 1's masked cut is its best valid tokens; image 0 (no padding) is the same in both
    scores = masked_out["enc_topk_scores"][1].detach()
    assert (scores[:-1] >= scores[1:]).all() and float(scores[0]) <= tie_score
    assert torch.equal(out["enc_topk_indices"][0], masked_out["enc_topk_indices"][0])
    # other queries: the matching and denoising terms change (the README's point 4; this
    # untrained model's dn boxes are its reference boxes, so only the dn class terms move)
    for term in ("loss_class", "loss_bbox", "loss_class_enc", "loss_class_dn"):
        assert not torch.isclose(losses[term], masked_losses[term], rtol=1e-4), term


def test_no_padding_no_difference_and_inference_masks_in_both_modes():
    cfg = LazyConfig.load(str(FOCUS_TINY))
    cfg.model.num_classes = 5
    cfg.model.transformer.num_queries = NUM_QUERIES
    cfg.model.denoising.num_dn_queries = 8
    cfg.model.select_box_nums_for_evaluation = 20
    torch.manual_seed(0)
    initial = instantiate_model(cfg.model)  # as the tools build it (norms folded)
    unpadded, padded = make_batch([SIZES[0]] * 2, [3, 2]), make_batch(SIZES, [3, 2])
    train_losses, eval_outputs = {}, {}
    for padding in ("published", "masked"):
        # the same history for both modes: a train-mode forward moves the tiny backbone's
        # batch-norm statistics, which the evaluation then uses
        model = copy.deepcopy(initial)
        model.transformer.padding = padding
        for module in (
            model.transformer.encoder.selector,
            model.transformer.encoder.foreground_loss,
        ):
            module.padding = padding
        model.train()
        train_losses[padding] = {
            k: float(v.detach()) for k, v in outputs_of(model, unpadded)[0].items()
        }
        model.eval()
        with torch.no_grad():
            eval_outputs[padding] = [r["instances"] for r in outputs_of(model, padded)[0]]
    assert train_losses["published"] == train_losses["masked"]
    for a, b in zip(eval_outputs["published"], eval_outputs["masked"]):
        assert torch.equal(a.scores, b.scores) and torch.equal(
            a.pred_boxes.tensor, b.pred_boxes.tensor
        )


@pytest.mark.parametrize(
    "build",
    [
        lambda: ForegroundTokenSelector(embed_dim=16, padding="publish"),
        lambda: ForegroundLoss(padding="publish"),
        lambda: DINOTransformer(
            encoder=None, decoder=tiny_model().transformer.decoder, padding="publish"
        ),
    ],
)
def test_unknown_padding_mode_names_the_key(build):
    with pytest.raises(ValueError, match=r"model\.transformer\.padding.*'publish'"):
        build()


@pytest.mark.parametrize(
    "config, expected",
    [
        ("projects/dino/configs/dino_r50_4scale_12ep.py", "published"),
        ("projects/dino/configs/dino_r101_4scale_12ep.py", "published"),
        ("projects/dino/configs/dino_r50_4scale_36ep.py", "published"),
        ("projects/focus_detr/configs/focus_detr_r50_4scale_12ep.py", "published"),
        ("projects/focus_detr/configs/focus_detr_r50_4scale_24ep.py", "published"),
        ("projects/focus_detr/configs/focus_detr_r101_4scale_36ep.py", "published"),
        ("projects/focus_detr/configs/focus_detr_swin_tiny_224_4scale_36ep.py", "published"),
        ("projects/sparse_detr/configs/dino_sparse_r50_4scale_36ep.py", "published"),
        ("projects/focus_detr/configs/focus_detr_tiny_synthetic.py", "masked"),
        ("projects/dino/configs/dino_tiny_synthetic.py", "masked"),
        ("projects/sparse_detr/configs/dino_sparse_tiny_synthetic.py", "masked"),
    ],
)
def test_one_key_sets_every_part(config, expected):
    cfg = LazyConfig.load(str(REPO / config))
    transformer = cfg.model.transformer
    assert transformer.padding == expected
    encoder = transformer.encoder
    focus = encoder.choices.focus if "choices" in encoder else encoder
    if "selector" in focus:
        assert focus.selector.padding == expected and focus.foreground_loss.padding == expected
        cfg = apply_overrides(cfg, ["model.transformer.padding=masked"])
        focus = (
            cfg.model.transformer.encoder.choices.focus
            if "choices" in encoder
            else cfg.model.transformer.encoder
        )
        assert focus.selector.padding == "masked" and focus.foreground_loss.padding == "masked"
