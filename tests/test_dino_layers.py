"""Generic layers of the DINO family against plain float64 formulas: sine position embeddings,
inverse sigmoid, the channel mapper's levels, the token geometry of the transformer."""

import math

import pytest
import torch
from detectron2.layers import ShapeSpec

from focus_detr.layers import PositionEmbeddingSine, get_sine_pos_embed, inverse_sigmoid
from focus_detr.modeling import ChannelMapper
from focus_detr.modeling.transformer.multiscale import (
    encoder_reference_points,
    token_proposals,
    valid_sizes,
)


def sine_ref(v, f, num_feats, temperature):
    """Feature f of the DETR sine embedding of coordinate v."""
    freq = temperature ** (2 * (f // 2) / num_feats)
    return math.sin(v / freq) if f % 2 == 0 else math.cos(v / freq)


@pytest.mark.parametrize("temperature,offset", [(10000, -0.5), (20, 0.0)])
def test_position_embedding_sine(temperature, offset):
    mask = torch.zeros(2, 3, 5, dtype=torch.bool)
    mask[1, 2:, :] = True  # image 1: 2 x 4 valid
    mask[1, :, 4:] = True
    n = 6
    pe = PositionEmbeddingSine(num_pos_feats=n, temperature=temperature, offset=offset)
    out = pe(mask)
    assert out.shape == (2, 2 * n, 3, 5)
    scale, eps = 2 * math.pi, 1e-6
    for b, (vh, vw) in enumerate([(3, 5), (2, 4)]):
        for y in range(vh):
            for x in range(vw):
                yy = (y + 1 + offset) / (vh + eps) * scale
                xx = (x + 1 + offset) / (vw + eps) * scale
                ref = [sine_ref(yy, f, n, temperature) for f in range(n)] + [
                    sine_ref(xx, f, n, temperature) for f in range(n)
                ]
                torch.testing.assert_close(
                    out[b, :, y, x], torch.tensor(ref, dtype=torch.float32), rtol=1e-5, atol=1e-5
                )


def test_sine_embedding_of_boxes():
    boxes = torch.tensor([[[0.1, 0.7, 0.3, 0.2]]])
    out = get_sine_pos_embed(boxes, num_pos_feats=4, temperature=100)
    assert out.shape == (1, 1, 16)
    order = [1, 0, 2, 3]  # y before x (DAB-DETR)
    ref = [
        sine_ref(boxes[0, 0, c].item() * 2 * math.pi, f, 4, 100) for c in order for f in range(4)
    ]
    torch.testing.assert_close(out[0, 0], torch.tensor(ref), rtol=1e-5, atol=1e-6)


def test_inverse_sigmoid():
    x = torch.tensor([0.0, 1e-4, 0.3, 0.5, 1.0, 1.5])
    eps = 1e-3
    ref = [math.log(max(min(v, 1), eps) / max(1 - min(max(v, 0), 1), eps)) for v in x.tolist()]
    torch.testing.assert_close(inverse_sigmoid(x), torch.tensor(ref))


def test_channel_mapper_levels():
    shapes = {"a": ShapeSpec(channels=8, stride=8), "b": ShapeSpec(channels=16, stride=16)}
    neck = ChannelMapper(
        shapes, ["a", "b"], out_channels=32, num_outs=4, norm=torch.nn.GroupNorm(8, 32)
    )
    feats = {"a": torch.randn(2, 8, 16, 20), "b": torch.randn(2, 16, 8, 10)}
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [
        (2, 32, 16, 20),
        (2, 32, 8, 10),
        (2, 32, 4, 5),
        (2, 32, 2, 3),
    ]
    assert neck.strides == [8, 16, 32, 64]
    assert neck.extra_convs[0].conv.in_channels == 16  # the first extra level reads input "b"
    with pytest.raises(ValueError, match="not among the backbone outputs"):
        ChannelMapper(shapes, ["a", "c"])


def test_token_geometry_with_padding():
    """Proposals and reference points are normalized by each level's VALID size; padded and
    border tokens are invalid proposals (+inf)."""
    masks = [torch.zeros(1, 4, 6, dtype=torch.bool)]
    masks[0][0, :, 3:] = True  # valid 4 x 3
    sizes = valid_sizes(masks)
    assert sizes.tolist() == [[[3.0, 4.0]]]
    shapes = torch.tensor([[4, 6]])
    ratios = sizes / torch.tensor([[6.0, 4.0]])
    ref = encoder_reference_points(shapes, ratios)
    # token (row 1, col 2): centre (2.5 / 3, 1.5 / 4) of the valid region, times the ratios
    torch.testing.assert_close(ref[0, 1 * 6 + 2, 0], torch.tensor([2.5 / 3 * 0.5, 1.5 / 4]))
    proposals, invalid = token_proposals(shapes, sizes, masks[0].flatten(1), 0.05)
    assert invalid.view(4, 6)[:, 3:].all() and torch.isinf(proposals[invalid]).all()
    box = proposals[0, 1 * 6 + 2].sigmoid()
    torch.testing.assert_close(box, torch.tensor([2.5 / 3, 1.5 / 4, 0.05, 0.05]))
    assert not invalid[0, 1 * 6 + 2]
