"""Foreground token selector: score network, score modulation (Eq. 2 and the logit variant),
padding-aware resizing, keep counts and ranking."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from focus_detr.modeling.focus import (
    ForegroundTokenSelector,
    TokenScoreNetwork,
    level_valid_sizes,
    resize_valid_region,
)


# detrex key names and shapes of `transformer.enc_mask_predictor` (reference state-dict list)
PUBLISHED_SCORE_NETWORK_KEYS = {
    "layer1.0.weight": (256,),
    "layer1.0.bias": (256,),
    "layer1.1.weight": (256, 256),
    "layer1.1.bias": (256,),
    "layer2.0.weight": (128, 256),
    "layer2.0.bias": (128,),
    "layer2.2.weight": (64, 128),
    "layer2.2.bias": (64,),
    "layer2.4.weight": (1, 64),
    "layer2.4.bias": (1,),
}


def reference_score(net, x, valid=None):
    """Float64 re-derivation of the score network from its weights."""
    p = {k: v.double() for k, v in net.state_dict().items()}
    x = x.double()
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    z = (x - mu) / torch.sqrt(var + 1e-5) * p["layer1.0.weight"] + p["layer1.0.bias"]
    z = z @ p["layer1.1.weight"].T + p["layer1.1.bias"]
    gelu = lambda t: 0.5 * t * (1 + torch.erf(t / 2**0.5))
    z = gelu(z)
    half = z.shape[-1] // 2
    glob = z[..., half:]
    if valid is None:
        pooled = glob.mean(1, keepdim=True)
    else:
        w = valid.double()[..., None]
        pooled = (glob * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)
    z = torch.cat([z[..., :half], pooled.expand_as(glob)], -1)
    z = gelu(z @ p["layer2.0.weight"].T + p["layer2.0.bias"])
    z = gelu(z @ p["layer2.2.weight"].T + p["layer2.2.bias"])
    return (z @ p["layer2.4.weight"].T + p["layer2.4.bias"])[..., 0]


def test_score_network_keys_match_published():
    net = TokenScoreNetwork(256, 256)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == PUBLISHED_SCORE_NETWORK_KEYS


def test_score_network_matches_float64_reference_and_masks_padding():
    torch.manual_seed(0)
    net = TokenScoreNetwork(16, 16)
    x = torch.randn(3, 10, 16)
    assert torch.allclose(net(x).double(), reference_score(net, x), atol=1e-5)
    valid = torch.arange(10)[None] < torch.tensor([10, 6, 1])[:, None]
    out = net(x, valid)
    assert torch.allclose(out.double(), reference_score(net, x, valid), atol=1e-5)
    # an all-valid mask is the plain mean; padded tokens do not reach valid scores
    assert torch.allclose(net(x, torch.ones(3, 10, dtype=torch.bool)), net(x), atol=1e-6)
    x2 = x.clone()
    x2[~valid] = 100.0
    assert torch.allclose(net(x2, valid)[valid], out[valid], atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        TokenScoreNetwork(16, 10)


@pytest.mark.parametrize("src,dst", [((3, 4), (5, 7)), ((6, 7), (3, 4)), ((1, 3), (2, 5))])
def test_resize_valid_region_matches_interpolate_per_image(src, dst):
    torch.manual_seed(0)
    maps = torch.randn(2, *src)
    full = lambda hw: torch.tensor([hw, hw])
    out = resize_valid_region(maps, full(src), dst, full(dst))
    assert torch.equal(
        out, F.interpolate(maps[:, None], dst, mode="bilinear", align_corners=True)[:, 0]
    )
    # image 1 padded: its valid crops are resized alone; padded source values never matter
    src_valid = torch.tensor([src, (max(1, src[0] - 1), max(1, src[1] - 1))])
    dst_valid = torch.tensor([dst, (max(1, dst[0] - 1), max(1, dst[1] - 2))])
    noisy = maps.clone()
    noisy[1, src_valid[1, 0] :] = 50.0
    noisy[1, :, src_valid[1, 1] :] = -50.0
    out = resize_valid_region(noisy, src_valid, dst, dst_valid)
    for b in range(2):
        sh, sw = src_valid[b].tolist()
        dh, dw = dst_valid[b].tolist()
        alone = F.interpolate(
            maps[b, None, None, :sh, :sw], (dh, dw), mode="bilinear", align_corners=True
        )[0, 0]
        assert torch.allclose(out[b, :dh, :dw], alone, atol=1e-5)


def test_level_valid_sizes():
    shapes, starts = [(4, 6), (2, 3)], [0, 24]
    mask = torch.ones(2, 30, dtype=torch.bool)
    lvl0 = torch.ones(2, 4, 6, dtype=torch.bool)
    lvl0[0] = False
    lvl0[1, :3, :5] = False
    lvl1 = torch.ones(2, 2, 3, dtype=torch.bool)
    lvl1[0] = False
    lvl1[1, :2, :2] = False
    mask = torch.cat([lvl0.flatten(1), lvl1.flatten(1)], 1)
    assert level_valid_sizes(mask, shapes, starts).tolist() == [[[4, 6], [2, 3]], [[3, 5], [2, 2]]]


SHAPES = torch.tensor([[8, 10], [4, 5], [2, 3], [1, 2]])
STARTS = torch.tensor([0, 80, 100, 106])
S = 108


def levels(x):
    return [x[:, s : s + h * w] for (h, w), s in zip(SHAPES.tolist(), STARTS.tolist())]


def make_selector(modulation="top_down", target="features", dim=16, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    sel = ForegroundTokenSelector(
        TokenScoreNetwork(dim, 16), modulation=modulation, modulation_target=target, **kw
    )
    return sel.to(dtype)


@pytest.mark.parametrize(
    "modulation,target",
    list(itertools.product(["top_down", "bottom_up"], ["features", "logits"]))
    + [("none", "features")],
)
def test_zero_coefficients_give_independent_level_scores(modulation, target):
    sel = make_selector(modulation, target)
    if sel.modulation_coefficients is not None:
        sel.modulation_coefficients.data.zero_()
    x = torch.randn(2, S, 16)
    mask = torch.zeros(2, S, dtype=torch.bool)
    independent = torch.cat([sel.score_network(t) for t in levels(x)], 1)
    assert torch.equal(sel.score(x, mask, SHAPES, STARTS), independent)


@pytest.mark.parametrize(
    "modulation,target", list(itertools.product(["top_down", "bottom_up"], ["features", "logits"]))
)
def test_gradients_reach_modulation_coefficients(modulation, target):
    sel = make_selector(modulation, target, dtype=torch.float64)
    x = torch.randn(1, S, 16, dtype=torch.float64)
    mask = torch.zeros(1, S, dtype=torch.bool)
    # large enough that some published factors (1 + a * UP(S)) turn negative
    coeffs = torch.tensor([0.9, -1.1, 1.3], dtype=torch.float64, requires_grad=True)

    def scores(a):
        return functional_call(
            sel, {"modulation_coefficients": a}, (x, mask, SHAPES, STARTS)
        ).logits

    assert torch.autograd.gradcheck(scores, (coeffs,), eps=1e-6, atol=1e-5)
    grad = torch.autograd.grad(scores(coeffs).sum(), coeffs)[0]
    if target == "logits":
        assert (grad.abs() > 1e-2).all(), grad
    else:
        # LayerNorm(f * x) = sign(f) * LayerNorm(x) but for its eps: the published form is
        # piecewise constant in the coefficients and its exact gradient is eps-sized
        assert torch.isfinite(grad).all() and grad.abs().max() < 1e-4, grad


def test_published_modulation_invariant_to_positive_factor_but_logit_variant_is_not():
    x = torch.randn(2, S, 16)
    mask = torch.zeros(2, S, dtype=torch.bool)
    published = make_selector("top_down", "features")
    variant = make_selector("top_down", "logits")
    variant.load_state_dict(published.state_dict())
    coeffs = torch.tensor([0.02, -0.03, 0.01])  # small: every factor 1 + a * UP(S) stays > 0
    with torch.no_grad():
        published.modulation_coefficients.copy_(coeffs)
        variant.modulation_coefficients.copy_(coeffs)
        independent = torch.cat([published.score_network(t) for t in levels(x)], 1)
        # the factor is positive: a per-token positive rescaling that the first LayerNorm removes
        factor_min = 1 - coeffs.abs().max() * independent.abs().max() * 3
        assert factor_min > 0
        assert torch.allclose(published.score(x, mask, SHAPES, STARTS), independent, atol=1e-4)
        # directly: any positive per-token factor on the network input is invisible
        scale = torch.rand(2, S, 1) * 5 + 0.1
        assert torch.allclose(
            published.score_network(x * scale), published.score_network(x), atol=1e-4
        )
        # the variant adds a * UP(S_coarser) to the logits: level 2 of top-down gets a_0 * UP(S_3)
        got = variant.score(x, mask, SHAPES, STARTS)
        lv = levels(got)
        up = F.interpolate(lv[3].view(2, 1, 1, 2), (2, 3), mode="bilinear", align_corners=True)
        expected2 = variant.score_network(levels(x)[2]) + coeffs[0] * up.flatten(1)
        assert torch.allclose(lv[2], expected2, atol=1e-6)
        assert (got - independent).abs().max() > 1e-3


def test_bottom_up_modulates_coarser_from_finer():
    sel = make_selector("bottom_up", "logits")
    x = torch.randn(1, S, 16)
    with torch.no_grad():
        got = levels(sel.score(x, torch.zeros(1, S, dtype=torch.bool), SHAPES, STARTS))
        down = F.interpolate(got[0].view(1, 1, 8, 10), (4, 5), mode="bilinear", align_corners=True)
        expected = sel.score_network(levels(x)[1]) + sel.modulation_coefficients[0] * down.flatten(
            1
        )
    assert torch.allclose(got[1], expected, atol=1e-6)
    assert torch.equal(got[0], sel.score_network(levels(x)[0]))


def test_coefficients_initialised_in_range_and_none_has_none():
    sel = ForegroundTokenSelector(TokenScoreNetwork(16, 16), coefficient_init_range=0.3)
    assert sel.modulation_coefficients.shape == (3,)
    assert sel.modulation_coefficients.abs().max() <= 0.3
    assert ForegroundTokenSelector(modulation="none").modulation_coefficients is None
    with pytest.raises(ValueError, match="modulation must be one of"):
        ForegroundTokenSelector(modulation="sideways")
    with pytest.raises(ValueError, match="modulation_target must be one of"):
        ForegroundTokenSelector(modulation_target="weights")
    with pytest.raises(ValueError, match="keep_ratio"):
        ForegroundTokenSelector(keep_ratio=0.0)


def test_published_keep_counts():
    # the published model's counts for two unpadded images of 3190 and 3276 tokens (fixture README)
    sel = ForegroundTokenSelector()
    assert sel.foreground_ratio == 0.5
    for valid_tokens, focus, keep in [
        (3190, 1596, [1596, 1276, 957, 957, 638, 319]),
        (3276, 1639, [1639, 1311, 983, 983, 655, 327]),
    ]:
        v, f, k = sel.keep_counts(torch.zeros(1, valid_tokens, dtype=torch.bool))
        assert (v.item(), f.item(), k[0].tolist()) == (valid_tokens, focus, keep)


def test_keep_counts_use_float32_cascade_like_the_published_code():
    sel = ForegroundTokenSelector()
    for valid_tokens in range(2, 400, 7):
        focus = int(valid_tokens * 0.5) + 1
        expected = [
            int((torch.tensor(c, dtype=torch.float32) * focus).item())
            for c in (1.0, 0.8, 0.6, 0.6, 0.4, 0.2)
        ]
        got = sel.keep_counts(torch.zeros(1, valid_tokens, dtype=torch.bool))[2][0].tolist()
        assert got == [min(e, valid_tokens) for e in expected]


def test_keep_ratio_scales_counts_and_mean_matches():
    mask = torch.zeros(1, 10000, dtype=torch.bool)
    for ratio in (0.1, 0.2, 0.3, 0.5):
        keep = ForegroundTokenSelector(keep_ratio=ratio).keep_counts(mask)[2]
        assert abs(keep.float().mean().item() / 10000 - ratio) < 2e-3
    everything = ForegroundTokenSelector(keep_ratio=1.0, cascade_ratios=(1.0, 1.0))
    assert everything.keep_counts(mask)[2].tolist() == [[10000, 10000]]


def test_mixed_batch_keeps_own_counts_and_never_padding():
    sel = make_selector()
    x = torch.randn(3, S, 16)
    mask = torch.zeros(3, S, dtype=torch.bool)
    mask[1, 40:80] = True
    mask[2, 5:] = True
    with torch.no_grad():
        selection = sel(x, mask, SHAPES, STARTS)
    valid = (~mask).sum(1)
    for b in range(3):
        single = sel.keep_counts(mask[b : b + 1])[2][0]
        assert torch.equal(selection.keep_counts[b], single)
    for layer in range(6):
        index, ok = selection.kept(layer)
        assert torch.equal(ok.sum(1), selection.keep_counts[:, layer])
        assert not torch.gather(mask, 1, index)[ok].any()
        assert (selection.keep_counts[:, layer] <= valid).all()
        for b in range(3):  # the kept set is the top of the image's valid logits
            kept = index[b][ok[b]]
            if len(kept) == 0:
                continue
            scores = selection.logits[b].masked_fill(mask[b], float("-inf"))
            threshold = scores[kept].min()
            assert (scores > threshold).sum() < len(kept)


def test_keep_ratio_beyond_the_cascade_is_refused():
    """keep_ratio is the mean kept fraction: with the published cascade (max / mean = 1 / 0.6)
    above 0.6 the first layer would keep more than every token and the mean would fall short."""
    ForegroundTokenSelector(keep_ratio=0.6)  # the first layer keeps all: allowed
    with pytest.raises(
        ValueError,
        match=r"keep_ratio=0.7 .* asks layer 0 to keep 1.17x the "
        r"valid tokens; with this cascade keep_ratio can be at "
        r"most 0.6",
    ):
        ForegroundTokenSelector(keep_ratio=0.7)
    with pytest.raises(ValueError, match="layer 1 .* at most 0.75"):
        ForegroundTokenSelector(keep_ratio=0.8, cascade_ratios=(0.5, 1.0))
