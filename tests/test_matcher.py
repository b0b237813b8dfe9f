"""Hungarian matcher against brute-force assignment with an independent float64 cost."""

import itertools
import math

import pytest
import torch

from focus_detr.modeling import HungarianMatcher


def giou_ref(a, b):
    """Generalized IoU of two cxcywh boxes, plain float64 arithmetic."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def cost_ref(logit, box, label, gt, wc=2.0, wb=5.0, wg=2.0, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-logit[label]))
    pos = alpha * (1 - p) ** gamma * -math.log(p + 1e-8)
    neg = (1 - alpha) * p**gamma * -math.log(1 - p + 1e-8)
    l1 = sum(abs(x - y) for x, y in zip(box, gt))
    return wc * (pos - neg) + wb * l1 - wg * giou_ref(box, gt)


def random_case(g, q, counts, k=4):
    logits = torch.randn(len(counts), q, k, generator=g) * 2
    boxes = torch.cat(
        [
            torch.rand(len(counts), q, 2, generator=g) * 0.6 + 0.2,
            torch.rand(len(counts), q, 2, generator=g) * 0.3 + 0.05,
        ],
        -1,
    )
    targets = [
        {
            "labels": torch.randint(0, k, (n,), generator=g),
            "boxes": torch.cat(
                [
                    torch.rand(n, 2, generator=g) * 0.6 + 0.2,
                    torch.rand(n, 2, generator=g) * 0.3 + 0.05,
                ],
                -1,
            ),
        }
        for n in counts
    ]
    return {"pred_logits": logits, "pred_boxes": boxes}, targets


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    q = 5
    counts = [int(torch.randint(0, 5, (1,), generator=g)) for _ in range(3)]
    outputs, targets = random_case(g, q, counts)
    matcher = HungarianMatcher()
    result = matcher(outputs, targets)
    assert len(result) == len(targets)
    for b, ((rows, cols), t) in enumerate(zip(result, targets)):
        n = len(t["labels"])
        assert rows.dtype == cols.dtype == torch.int64
        assert len(rows) == len(cols) == min(q, n)
        assert sorted(cols.tolist()) == list(range(n)) and len(set(rows.tolist())) == len(rows)
        cost = [
            [
                cost_ref(
                    outputs["pred_logits"][b, i].double().tolist(),
                    outputs["pred_boxes"][b, i].double().tolist(),
                    int(t["labels"][j]),
                    t["boxes"][j].double().tolist(),
                )
                for j in range(n)
            ]
            for i in range(q)
        ]
        got = sum(cost[i][j] for i, j in zip(rows.tolist(), cols.tolist()))
        best = min(
            (
                sum(cost[i][j] for j, i in enumerate(perm))
                for perm in itertools.permutations(range(q), n)
            ),
            default=0.0,
        )
        assert got == pytest.approx(best, abs=1e-4)


def test_cost_matrix_against_reference():
    g = torch.Generator().manual_seed(7)
    outputs, targets = random_case(g, 6, [3])
    m = HungarianMatcher(cost_class=1.5, cost_bbox=3.0, cost_giou=0.5, alpha=0.3, gamma=1.5)
    c = m.cost_matrix(
        outputs["pred_logits"][0],
        outputs["pred_boxes"][0],
        targets[0]["labels"],
        targets[0]["boxes"],
    )
    t = targets[0]
    ref = torch.tensor(
        [
            [
                cost_ref(
                    outputs["pred_logits"][0, i].tolist(),
                    outputs["pred_boxes"][0, i].tolist(),
                    int(t["labels"][j]),
                    t["boxes"][j].tolist(),
                    1.5,
                    3.0,
                    0.5,
                    0.3,
                    1.5,
                )
                for j in range(3)
            ]
            for i in range(6)
        ]
    )
    torch.testing.assert_close(c, ref.float(), rtol=1e-5, atol=1e-5)


def test_all_costs_zero_is_an_error():
    with pytest.raises(ValueError, match="all costs"):
        HungarianMatcher(0, 0, 0)
