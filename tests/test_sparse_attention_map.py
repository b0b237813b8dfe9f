"""Sparse DETR's decoder cross-attention map (DAM), its targets and the attention-map loss."""

import pytest
import torch
import torch.nn.functional as F

from focus_detr.modeling.sparse import (
    AttentionMapLoss,
    decoder_attention_map,
    masked_multilabel_soft_margin_loss,
    sparse_keep_counts,
    top_count_targets,
)

SHAPES = torch.tensor([[2, 2], [3, 4]])  # level 0: 2x2 (tokens 0..3), level 1: 3x4 (tokens 4..15)
STARTS = torch.tensor([0, 4])


def one_point(level: int, x: float, y: float, weight: float, num_levels: int = 2):
    """Sampling tensors (layers=1, N=1, Q=1, heads=1, L, P=1) with one point of weight `weight`
    at normalized (x, y) on `level` and zero weight elsewhere."""
    loc = torch.full((1, 1, 1, 1, num_levels, 1, 2), 0.5, dtype=torch.float64)
    w = torch.zeros(1, 1, 1, 1, num_levels, 1, dtype=torch.float64)
    loc[..., level, 0, :] = torch.tensor([x, y], dtype=torch.float64)
    w[..., level, 0] = weight
    return loc, w


def test_point_between_four_tokens_gets_bilinear_weights():
    # level 1 is 3 rows x 4 columns; pixel coordinate (1.25, 0.5) lies between token centres
    # (col 1, row 0), (col 2, row 0), (col 1, row 1), (col 2, row 1).
    # align_corners=False: x_norm = (col + 0.5) / W.
    x, y = (1.25 + 0.5) / 4, (0.5 + 0.5) / 3
    loc, w = one_point(1, x, y, 0.8)
    dam = decoder_attention_map(loc, w, SHAPES, STARTS)
    expected = torch.zeros(1, 16, dtype=torch.float64)
    start = 4
    expected[0, start + 0 * 4 + 1] = 0.8 * 0.75 * 0.5  # (1 - 0.25) * (1 - 0.5)
    expected[0, start + 0 * 4 + 2] = 0.8 * 0.25 * 0.5
    expected[0, start + 1 * 4 + 1] = 0.8 * 0.75 * 0.5
    expected[0, start + 1 * 4 + 2] = 0.8 * 0.25 * 0.5
    torch.testing.assert_close(dam, expected, rtol=0, atol=1e-12)


def test_point_on_a_token_centre_and_outside_corners():
    # exactly on the centre of level-0 token (row 1, col 0): all the weight goes there
    loc, w = one_point(0, 0.5 / 2, 1.5 / 2, 0.6)
    dam = decoder_attention_map(loc, w, SHAPES, STARTS)
    expected = torch.zeros(1, 16, dtype=torch.float64)
    expected[0, 2] = 0.6
    torch.testing.assert_close(dam, expected, rtol=0, atol=1e-12)
    # on the left image border (pixel x = -0.5), half-way between rows 0 and 1 of level 0: the
    # two corners left of the grid fall outside (the attention reads zeros there) and get nothing
    loc, w = one_point(0, 0.0, 1.0 / 2, 1.0)
    dam = decoder_attention_map(loc, w, SHAPES, STARTS)
    expected = torch.zeros(1, 16, dtype=torch.float64)
    expected[0, 0] = expected[0, 2] = 0.5 * 0.5
    torch.testing.assert_close(dam, expected, rtol=0, atol=1e-12)


def test_published_pixel_offset_is_half_a_token_off():
    # pixel_offset=0 (the published code): location x * W lands on (col 1.75, row 1.0)
    x, y = (1.25 + 0.5) / 4, (0.5 + 0.5) / 3
    loc, w = one_point(1, x, y, 1.0)
    dam = decoder_attention_map(loc, w, SHAPES, STARTS, pixel_offset=0.0)
    expected = torch.zeros(1, 16, dtype=torch.float64)
    expected[0, 4 + 1 * 4 + 1] = 0.25
    expected[0, 4 + 1 * 4 + 2] = 0.75
    torch.testing.assert_close(dam, expected, rtol=0, atol=1e-12)


def grid_sample_adjoint(loc, w, shapes, starts):
    """Independent reference: the DAM is the gradient, with respect to a scalar token map, of
    the attention's output sum over all sampling points (bilinear `grid_sample`,
    align_corners=False, zero padding), i.e. how much each token contributed."""
    layers, n, q, heads, levels, points, _ = loc.shape
    total = int(shapes.prod(1).sum())
    tokens = torch.zeros(n, total, dtype=loc.dtype, requires_grad=True)
    out = 0.0
    for lvl, ((h, wd), start) in enumerate(zip(shapes.tolist(), starts.tolist())):
        v = tokens[:, start : start + h * wd].view(n, 1, h, wd)
        grid = (2 * loc[..., lvl, :, :] - 1).permute(1, 0, 2, 3, 4, 5).reshape(n, -1, points, 2)
        sampled = F.grid_sample(
            v, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (n, 1, layers*q*heads, points)
        weights = w[..., lvl, :].permute(1, 0, 2, 3, 4).reshape(n, 1, -1, points)
        out = out + (sampled * weights).sum()
    (grad,) = torch.autograd.grad(out, tokens)
    return grad


def test_random_sampling_matches_grid_sample_adjoint_float64():
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[5, 7], [3, 4], [2, 2]])
    starts = torch.cat([torch.zeros(1, dtype=torch.long), shapes.prod(1).cumsum(0)[:-1]])
    layers, n, q, heads, levels, points = 3, 2, 5, 4, 3, 4
    # some locations outside [0, 1] too: their corners outside the grid get nothing
    loc = (
        torch.rand(layers, n, q, heads, levels, points, 2, generator=g, dtype=torch.float64) * 1.3
        - 0.15
    )
    w = torch.rand(layers, n, q, heads, levels * points, generator=g, dtype=torch.float64)
    w = w.softmax(-1).view(layers, n, q, heads, levels, points)
    dam = decoder_attention_map(loc, w, shapes, starts)
    torch.testing.assert_close(
        dam, grid_sample_adjoint(loc, w, shapes, starts), rtol=1e-12, atol=1e-12
    )
    # summed over layers: the map of all layers is the sum of each layer's map
    per_layer = sum(
        decoder_attention_map(loc[i : i + 1], w[i : i + 1], shapes, starts) for i in range(layers)
    )
    torch.testing.assert_close(dam, per_layer, rtol=1e-12, atol=1e-12)
    # mass is conserved when every corner is inside the grid
    inner = loc.clamp(0.3, 0.7)
    torch.testing.assert_close(
        decoder_attention_map(inner, w, shapes, starts).sum(1),
        w.sum(dim=(0, 2, 3, 4, 5)),
        rtol=1e-12,
        atol=1e-12,
    )


def test_map_is_detached():
    loc, w = one_point(1, 0.4, 0.4, 0.5)
    w.requires_grad_(True)
    assert not decoder_attention_map(loc, w, SHAPES, STARTS).requires_grad


def test_bad_shapes_are_rejected():
    loc, w = one_point(1, 0.4, 0.4, 0.5)
    with pytest.raises(ValueError, match="sampling_locations must be"):
        decoder_attention_map(loc[0], w, SHAPES, STARTS)
    with pytest.raises(ValueError, match="do not match"):
        decoder_attention_map(loc, w[..., 0], SHAPES, STARTS)
    with pytest.raises(ValueError, match="spatial_shapes must be"):
        decoder_attention_map(loc, w, SHAPES[:1], STARTS[:1])


def test_keep_counts():
    padding = torch.zeros(3, 20, dtype=torch.bool)
    padding[1, 10:] = True
    padding[2, 1:] = True
    counts = sparse_keep_counts(padding, 0.3)
    assert counts.tolist() == [int(20 * 0.3) + 1, int(10 * 0.3) + 1, 1]
    assert sparse_keep_counts(padding, 1.0).tolist() == [20, 10, 1]  # capped at the valid count


def test_targets_top_valid_tokens_and_padding_never_a_target():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.7, 5.0, 6.0], [0.2, 0.1, 0.0, 0.4, 0.3, 0.5]])
    padding = torch.tensor(
        [[False, False, False, False, True, True], [False, False, False, False, False, False]]
    )
    counts = torch.tensor([2, 3])
    targets = top_count_targets(scores, padding, counts)
    # image 0: the padded tokens have the largest attention but are never targets
    assert targets.tolist() == [[0, 1, 0, 1, 0, 0], [0, 0, 0, 1, 1, 1]]
    # an all-zero map still gives exactly `count` valid targets
    zero = top_count_targets(torch.zeros(2, 6), padding, counts)
    assert zero.sum(1).tolist() == [2, 3] and not bool((zero.bool() & padding).any())
    with pytest.raises(ValueError, match="exceed the valid tokens"):
        top_count_targets(scores, padding, torch.tensor([5, 3]))


def test_attention_map_loss_targets_from_sampling():
    # the one point of `test_point_between_four_tokens_gets_bilinear_weights`: with a count of
    # 2 the two heavier tokens (col 1, rows 0 and 1 of level 1) are the targets
    x, y = (1.25 + 0.5) / 4, (0.5 + 0.5) / 3
    loc, w = one_point(1, x, y, 0.8)
    loss = AttentionMapLoss()
    padding = torch.zeros(1, 16, dtype=torch.bool)
    targets = loss.targets(loc, w, SHAPES, STARTS, padding, torch.tensor([2]))
    assert targets.nonzero()[:, 1].tolist() == [4 + 1, 4 + 4 + 1]


def test_masked_multilabel_soft_margin_loss():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 11, generator=g, dtype=torch.float64)
    targets = (torch.rand(3, 11, generator=g) > 0.6).double()
    torch.testing.assert_close(
        masked_multilabel_soft_margin_loss(logits, targets),
        F.multilabel_soft_margin_loss(logits, targets),
    )
    padding = torch.zeros(3, 11, dtype=torch.bool)
    padding[1, 7:] = True
    padding[2, 4:] = True
    expected = torch.stack(
        [
            F.multilabel_soft_margin_loss(
                logits[i, ~padding[i]][None], targets[i, ~padding[i]][None]
            )
            for i in range(3)
        ]
    ).mean()
    loss = masked_multilabel_soft_margin_loss(logits, targets, padding)
    torch.testing.assert_close(loss, expected)
    # padded logits do not matter
    changed = logits.masked_fill(padding, 100.0)
    torch.testing.assert_close(masked_multilabel_soft_margin_loss(changed, targets, padding), loss)
    weighted = AttentionMapLoss(weight=2.5, name="x")(logits, targets, padding)
    torch.testing.assert_close(weighted["x"], 2.5 * loss)
