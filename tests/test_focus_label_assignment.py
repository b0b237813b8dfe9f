"""Label assignment (Eq. 1) and the foreground focal loss (Eq. 7)."""

import math

import pytest
import torch

from focus_detr.modeling.focus import (
    ForegroundLabelAssigner,
    ForegroundLoss,
    foreground_focal_loss,
    overlapping_scale_ranges,
    pad_boxes,
    target_boxes_xyxy,
)


SHAPES = [(8, 8), (4, 4), (2, 2), (1, 1)]  # levels of a 64 x 64 input, strides 8 .. 64
STARTS = [0, 64, 80, 84]


def level_of(flat_index):
    return max(l for l, s in enumerate(STARTS) if flat_index >= s)


def rc(flat_index):
    l = level_of(flat_index)
    w = SHAPES[l][1]
    return l, (flat_index - STARTS[l]) // w, (flat_index - STARTS[l]) % w


def brute_force_labels(boxes, shapes, strides, ranges, measure="max_side_distance"):
    """Plain-Python float64 re-statement of Eq. 1 with the published distance, one token at a time."""
    labels = []
    for (h, w), s, (lo, hi) in zip(shapes, strides, ranges):
        for i in range(h):
            for j in range(w):
                x, y = s * j + s // 2, s * i + s // 2
                pos = False
                for x0, y0, x1, y1 in boxes:
                    d = [x - x0, y - y0, x1 - x, y1 - y]
                    size = max(d) if measure == "max_side_distance" else max(x1 - x0, y1 - y0) / 2
                    if min(d) > 0 and lo < size <= hi:
                        pos = True
                labels.append(pos)
    return labels


def test_hand_computed_small_box_lands_on_finest_level():
    # box x in (10, 50), y in (20, 40): stride-8 centres 4, 12, 20, ... are strictly inside for
    # x in {12, 20, 28, 36, 44} (cols 1..5) and y in {28, 36} (rows 3, 4); their largest distance
    # to a side is at most 38 <= 64, so they are level-0 foreground; coarser tokens inside the
    # box (e.g. stride 16 at (24, 24)) have distances <= 64, outside (64, 128]: background.
    assigner = ForegroundLabelAssigner(strides=(8, 16, 32, 64))
    boxes, valid = pad_boxes([torch.tensor([[10.0, 20.0, 50.0, 40.0]])])
    labels = assigner(boxes, valid, SHAPES)[0]
    got = sorted(rc(i) for i in labels.nonzero().flatten().tolist())
    assert got == [(0, r, c) for r in (3, 4) for c in range(1, 6)]


def test_hand_computed_large_box_splits_between_levels():
    # box (0, 0, 300, 300) seen by the stride-64 level (centres 32, 96, 160, 224, 288): every
    # centre is inside; (32, 32) has largest side distance 268 > 256 -> level 3 foreground;
    # (160, 160) has 160 -> level 2's range (128, 256], so level 3 background.
    assigner = ForegroundLabelAssigner()
    shapes = [(1, 1), (1, 1), (5, 5), (5, 5)]
    boxes, valid = pad_boxes([torch.tensor([[0.0, 0.0, 300.0, 300.0]])])
    labels = assigner(boxes, valid, shapes)[0]
    level3 = labels[27:].view(5, 5)
    # largest distance from (32 + 64j, 32 + 64i) is max(300 - 32 - 64 min(i, j), 32 + 64 max(i, j))
    expected = torch.tensor(
        [[max(268 - 64 * min(i, j), 32 + 64 * max(i, j)) > 256 for j in range(5)] for i in range(5)]
    )
    assert torch.equal(level3, expected)
    assert level3[0, 0] and not level3[2, 2] and level3[4, 4]
    # level 2 with stride 64 here would be ranges (128, 256]: (160, 160) is foreground there
    assert labels[2:27].view(5, 5)[2, 2]


def test_matches_brute_force_on_random_boxes_and_batch():
    g = torch.Generator().manual_seed(0)
    shapes = [(12, 16), (6, 8), (3, 4), (2, 2)]
    assigner = ForegroundLabelAssigner()
    per_image = []
    for n in (5, 0, 2):
        xy = torch.rand(n, 2, generator=g) * 100
        wh = torch.rand(n, 2, generator=g) * 120 + 4
        per_image.append(torch.cat([xy, xy + wh], 1).round())
    boxes, valid = pad_boxes(per_image)
    labels = assigner(boxes, valid, shapes)
    for b, bx in enumerate(per_image):
        expected = brute_force_labels(bx.tolist(), shapes, assigner.strides, assigner.scale_ranges)
        assert labels[b].tolist() == expected
    assert labels[0].any() and not labels[1].any()
    for measure in ("half_size",):
        a2 = ForegroundLabelAssigner(scale_ranges=overlapping_scale_ranges(), size_measure=measure)
        labels2 = a2(boxes, valid, shapes)
        for b, bx in enumerate(per_image):
            assert labels2[b].tolist() == brute_force_labels(
                bx.tolist(), shapes, a2.strides, a2.scale_ranges, measure
            )


def test_padding_never_positive():
    assigner = ForegroundLabelAssigner()
    boxes, valid = pad_boxes([torch.tensor([[0.0, 0.0, 64.0, 64.0]])])
    s = sum(h * w for h, w in SHAPES)
    padding = torch.zeros(1, s, dtype=torch.bool)
    padding[0, 4:8] = True  # right half of level 0's first row (inside the box)
    free = assigner(boxes, valid, SHAPES)
    masked = assigner(boxes, valid, SHAPES, padding)
    assert free[0, 4:8].any()
    assert not masked[padding].any()
    assert torch.equal(masked[~padding], free[~padding])


def test_overlapping_ranges_follow_the_paper_recurrence():
    ranges = overlapping_scale_ranges()
    assert ranges == ((0.0, 64.0), (32.0, 128.0), (80.0, 256.0), (168.0, math.inf))
    for (b0, e0), (b1, e1) in zip(ranges, ranges[1:]):
        assert b0 < b1 < e0 < e1 and b1 == (b0 + e0) / 2


def test_assigner_rejects_bad_configuration():
    with pytest.raises(ValueError, match="strides but"):
        ForegroundLabelAssigner(strides=(8, 16), scale_ranges=overlapping_scale_ranges())
    with pytest.raises(ValueError, match="size_measure"):
        ForegroundLabelAssigner(size_measure="area")
    with pytest.raises(ValueError, match="levels"):
        ForegroundLabelAssigner()(*pad_boxes([torch.zeros(1, 4)]), [(2, 2)])
    for bad in (0, -0.5, float("inf"), "0.3", None):
        with pytest.raises(ValueError, match="range_scale must be a positive finite number"):
            ForegroundLabelAssigner(range_scale=bad)


def test_range_scale_scales_every_positive_bound():
    # published ranges at a quarter: (-1, 16], (16, 32], (32, 64], (64, inf); the "any size"
    # lower bound -1 and the open end stay
    assigner = ForegroundLabelAssigner(range_scale=0.25)
    assert assigner.scale_ranges == ((-1.0, 16.0), (16.0, 32.0), (32.0, 64.0), (64.0, math.inf))
    torch.manual_seed(3)
    xy = torch.rand(6, 2) * 48
    wh = torch.rand(6, 2) * 40 + 4
    boxes = torch.cat([xy, (xy + wh).clamp(max=64)], 1)
    labels = assigner(*pad_boxes([boxes]), SHAPES)[0]
    expected = brute_force_labels(
        boxes.double().tolist(), SHAPES, (8, 16, 32, 64), assigner.scale_ranges
    )
    assert labels.tolist() == expected
    # a 40-px box (every token inside is 20 px or more from a side): level 0 under the published
    # ranges, level 1 at 0.25
    published = ForegroundLabelAssigner()(
        *pad_boxes([torch.tensor([[4.0, 4.0, 44.0, 44.0]])]), SHAPES
    )[0]
    scaled = assigner(*pad_boxes([torch.tensor([[4.0, 4.0, 44.0, 44.0]])]), SHAPES)[0]
    assert {level_of(i) for i in published.nonzero().flatten().tolist()} == {0}
    assert {level_of(i) for i in scaled.nonzero().flatten().tolist()} == {1}


def naive_focal(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits.double())
    t = targets.double()
    pt = p * t + (1 - p) * (1 - t)
    w = alpha * t + (1 - alpha) * (1 - t)
    return -w * (1 - pt) ** gamma * torch.log(pt)


def test_focal_loss_matches_formula_and_is_safe():
    torch.manual_seed(0)
    logits = torch.randn(1, 50, dtype=torch.float64) * 4
    targets = torch.rand(1, 50) > 0.7
    expected = naive_focal(logits, targets).sum() / targets.sum()
    assert torch.allclose(foreground_focal_loss(logits, targets), expected, atol=1e-12)
    # saturated logits: the naive log(p_t) overflows, the loss stays finite and exact
    extreme = torch.tensor([[-200.0, 200.0, -200.0, 200.0]])
    t = torch.tensor([[True, False, False, True]])
    assert not torch.isfinite(naive_focal(extreme, t).sum())
    assert torch.allclose(
        foreground_focal_loss(extreme, t), torch.tensor((0.25 * 200 + 0.75 * 200) / 2)
    )
    x = torch.randn(2, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.rand(2, 7) > 0.5
    assert torch.autograd.gradcheck(lambda v: foreground_focal_loss(v, labels), (x,))


def test_foreground_focal_loss_normalisation_and_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 30, dtype=torch.float64)
    labels = torch.zeros(2, 30, dtype=torch.bool)
    labels[0, :4] = True  # image 1 has no positives: divided by 1
    padding = torch.zeros(2, 30, dtype=torch.bool)
    padding[1, 20:] = True
    per_token = naive_focal(logits, labels)
    expected = (per_token[0].sum() / 4 + per_token[1, :20].sum() / 1) / 2
    got = foreground_focal_loss(logits, labels, padding)
    assert torch.allclose(got, expected, atol=1e-12)
    logits2 = logits.clone()
    logits2[padding] = 50.0
    assert torch.allclose(foreground_focal_loss(logits2, labels, padding), got, atol=1e-12)
    # labels in padding (impossible from the assigner) are ignored as well
    labels2 = labels.clone()
    labels2[1, 25] = True
    assert torch.allclose(foreground_focal_loss(logits, labels2, padding), got, atol=1e-12)


def test_foreground_loss_weights_and_names():
    logits = torch.zeros(1, sum(h * w for h, w in SHAPES))
    padding = torch.zeros_like(logits, dtype=torch.bool)
    boxes = [torch.tensor([[10.0, 20.0, 50.0, 40.0]])]
    out = ForegroundLoss()(logits, boxes, SHAPES, padding)
    assert list(out) == ["select_loss"]
    labels = ForegroundLoss().labels(boxes, SHAPES, padding)
    assert labels.sum() == 10
    raw = foreground_focal_loss(logits, labels, padding)
    assert torch.allclose(out["select_loss"], 1.5 * raw)
    assert torch.allclose(
        ForegroundLoss(weight=2.0, name="fg")(logits, boxes, SHAPES, padding)["fg"], 2.0 * raw
    )
    with pytest.raises(ValueError, match="target box sets"):
        ForegroundLoss()(logits, boxes * 2, SHAPES, padding)


def test_target_boxes_conversion():
    xyxy = torch.tensor([[10.0, 20.0, 50.0, 40.0]])
    assert torch.equal(target_boxes_xyxy({"boxes_xyxy": xyxy}), xyxy)
    cxcywh = torch.tensor([[30.0 / 100, 30.0 / 80, 40.0 / 100, 20.0 / 80]])
    assert torch.allclose(target_boxes_xyxy({"boxes": cxcywh, "image_size": (80, 100)}), xyxy)
    assert torch.allclose(target_boxes_xyxy({"boxes": cxcywh}, (80, 100)), xyxy)
    with pytest.raises(KeyError, match="image size"):
        target_boxes_xyxy({"boxes": cxcywh})
