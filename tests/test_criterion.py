"""DINO's loss terms against independent float64 implementations, loss naming, weighting and the
denoising normalization."""

import math

import pytest
import torch

from focus_detr.modeling import DINOCriterion, HungarianMatcher
from focus_detr.modeling.denoising import DenoisingMeta

from test_matcher import giou_ref


class FixedMatcher(torch.nn.Module):
    """Returns the same indices for every output (isolates the loss terms from matching)."""

    def __init__(self, indices):
        super().__init__()
        self.indices = indices
        self.calls = 0

    def forward(self, outputs, targets):
        self.calls += 1
        return self.indices


def focal_ref(x, t, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-x))
    ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    return a_t * ce * (1 - p_t) ** gamma


def setup_case(seed=0, n=2, q=6, k=3, counts=(2, 1)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, q, k, generator=g, dtype=torch.float64)
    boxes = torch.cat(
        [
            torch.rand(n, q, 2, generator=g, dtype=torch.float64) * 0.5 + 0.25,
            torch.rand(n, q, 2, generator=g, dtype=torch.float64) * 0.3 + 0.1,
        ],
        -1,
    )
    targets = [
        {
            "labels": torch.randint(0, k, (c,), generator=g),
            "boxes": torch.cat(
                [
                    torch.rand(c, 2, generator=g, dtype=torch.float64) * 0.5 + 0.25,
                    torch.rand(c, 2, generator=g, dtype=torch.float64) * 0.3 + 0.1,
                ],
                -1,
            ),
        }
        for c in counts
    ]
    indices = [(torch.tensor([4, 1]), torch.tensor([1, 0])), (torch.tensor([2]), torch.tensor([0]))]
    return logits, boxes, targets, indices


def test_loss_terms_against_reference():
    logits, boxes, targets, indices = setup_case()
    crit = DINOCriterion(num_classes=3, matcher=FixedMatcher(indices), alpha=0.3, gamma=1.5)
    num_boxes = 3.0
    got = crit.loss_labels(logits, targets, indices, num_boxes)
    onehot = [[[0.0] * 3 for _ in range(6)] for _ in range(2)]
    for b, (src, tgt) in enumerate(indices):
        for i, j in zip(src.tolist(), tgt.tolist()):
            onehot[b][i][int(targets[b]["labels"][j])] = 1.0
    ref = (
        sum(
            focal_ref(logits[b, i, c].item(), onehot[b][i][c], 0.3, 1.5)
            for b in range(2)
            for i in range(6)
            for c in range(3)
        )
        / num_boxes
    )
    assert got.item() == pytest.approx(ref, rel=1e-10)

    box = crit.loss_boxes(boxes, targets, indices, num_boxes)
    l1 = giou = 0.0
    for b, (src, tgt) in enumerate(indices):
        for i, j in zip(src.tolist(), tgt.tolist()):
            p, t = boxes[b, i].tolist(), targets[b]["boxes"][j].tolist()
            l1 += sum(abs(x - y) for x, y in zip(p, t))
            giou += 1 - giou_ref(p, t)
    assert box["loss_bbox"].item() == pytest.approx(l1 / num_boxes, rel=1e-10)
    assert box["loss_giou"].item() == pytest.approx(giou / num_boxes, rel=1e-10)


def test_forward_names_weights_and_normalization():
    logits, boxes, targets, indices = setup_case()
    matcher = FixedMatcher(indices)
    weights = {"loss_class": 2.0, "loss_bbox": 5.0, "loss_giou": 3.0, "loss_bbox_enc": 7.0}
    crit = DINOCriterion(num_classes=3, matcher=matcher, weight_dict=weights)
    out = {
        "pred_logits": logits,
        "pred_boxes": boxes,
        "aux_outputs": [{"pred_logits": logits + 1, "pred_boxes": boxes}],
        "enc_outputs": {"pred_logits": logits - 1, "pred_boxes": boxes},
    }
    # denoising: 2 groups of 2 * max_gt = 4 queries; image 0's objects sit at slots 0,1 and 4,5
    meta = DenoisingMeta(num_groups=2, max_gt=2)
    dn_idx = [
        (torch.tensor([0, 1, 4, 5]), torch.tensor([0, 1, 0, 1])),
        (torch.tensor([0, 4]), torch.tensor([0, 0])),
    ]
    dn_out = {
        "pred_logits": logits[:, : 8 - 2],
        "pred_boxes": boxes[:, :6],
        "aux_outputs": [{"pred_logits": logits[:, :6], "pred_boxes": boxes[:, :6]}],
    }
    losses = crit(out, targets, dn_out, meta, dn_idx)
    assert matcher.calls == 3  # last layer, one auxiliary layer, encoder proposals
    suffixes = ["", "_0", "_enc", "_dn", "_dn_0"]
    assert set(losses) == {
        b + s for b in ("loss_class", "loss_bbox", "loss_giou") for s in suffixes
    }
    n = 3.0
    raw = crit.loss_boxes(boxes, targets, indices, n)
    assert losses["loss_bbox"].item() == pytest.approx(5.0 * raw["loss_bbox"].item())
    assert losses["loss_bbox_enc"].item() == pytest.approx(7.0 * raw["loss_bbox"].item())
    assert losses["loss_giou_0"].item() == pytest.approx(3.0 * raw["loss_giou"].item())
    assert losses["loss_class_0"].item() == pytest.approx(
        2.0 * crit.loss_labels(logits + 1, targets, indices, n).item()
    )
    # denoising terms are divided by (number of boxes) x (number of groups)
    dn_raw = crit.loss_boxes(boxes[:, :6], targets, dn_idx, n * 2)
    assert losses["loss_bbox_dn"].item() == pytest.approx(5.0 * dn_raw["loss_bbox"].item())
    l1 = sum(
        abs(boxes[b, i] - targets[b]["boxes"][j]).sum().item()
        for b, (src, tgt) in enumerate(dn_idx)
        for i, j in zip(src.tolist(), tgt.tolist())
    )
    assert losses["loss_bbox_dn_0"].item() == pytest.approx(5.0 * l1 / 6.0)


def test_no_denoising_gives_zero_dn_terms_and_empty_targets_are_finite():
    logits, boxes, targets, _ = setup_case(counts=(0, 0))
    crit = DINOCriterion(num_classes=3, matcher=HungarianMatcher())
    out = {
        "pred_logits": logits.requires_grad_(),
        "pred_boxes": boxes,
        "aux_outputs": [{"pred_logits": logits, "pred_boxes": boxes}],
    }
    losses = crit(out, targets)
    assert {k for k in losses if "_dn" in k} == {
        f"{b}{s}" for b in ("loss_class", "loss_bbox", "loss_giou") for s in ("_dn", "_dn_0")
    }
    assert all(losses[k].item() == 0 for k in losses if "_dn" in k or "bbox" in k or "giou" in k)
    # no objects: every class target is 0, normalized by max(#boxes, 1) = 1
    ref = sum(focal_ref(x, 0.0) for x in logits.flatten().tolist())
    assert losses["loss_class"].item() == pytest.approx(ref)
    sum(losses.values()).backward()


def test_unknown_loss_weight_is_an_error():
    crit = DINOCriterion(num_classes=3, matcher=HungarianMatcher(), weight_dict={"loss_bbox": 1})
    assert crit.weight("loss_bbox_dn_3") == 1
    with pytest.raises(KeyError, match="loss_giou"):
        crit.weight("loss_giou_enc")
