"""The token-selection record (`TokenSelection`): its methods on a hand-built batch, and that the
Focus and Sparse DETR encoders produce it with consistent shapes while the dense one gives None."""

import pytest
import torch

from focus_detr.modeling.transformer import TokenSelection
from tests.tools_utils import DENSE, FOCUS, SMALL_INPUT, SPARSE, tiny_model
from focus_detr.analysis import image_list


def _hand_built():
    # two images of 6 tokens (levels 2x2 and 1x2); image 1 has tokens 4, 5 padded
    # layer 0 keeps 3 / 2 tokens, layer 1 keeps 1 / 1; the invalid slot of image 1 names token 0
    return TokenSelection(
        scores=torch.arange(12.0).view(2, 6),
        kept_index=[torch.tensor([[5, 0, 2], [1, 3, 0]]), torch.tensor([[5], [3]])],
        kept_valid=[
            torch.tensor([[True, True, True], [True, True, False]]),
            torch.tensor([[True], [True]]),
        ],
        padding_mask=torch.tensor([[False] * 6, [False] * 4 + [True] * 2]),
        spatial_shapes=torch.tensor([[2, 2], [1, 2]]),
        level_start_index=torch.tensor([0, 4]),
        object_index=[torch.tensor([[0], [1]]), torch.tensor([[5], [3]])],
        object_valid=[torch.tensor([[True], [True]]), torch.tensor([[True], [False]])],
        strides=[8, 16],
    )


def test_record_methods_on_a_hand_built_batch():
    sel = _hand_built()
    masks = sel.kept_masks()
    assert masks.shape == (2, 2, 6) and masks.dtype == torch.bool
    assert masks[0, 0].nonzero().flatten().tolist() == [0, 2, 5]
    assert masks[0, 1].nonzero().flatten().tolist() == [1, 3]  # the invalid slot sets nothing
    assert masks[1, 0].nonzero().flatten().tolist() == [5]
    assert masks[1, 1].nonzero().flatten().tolist() == [3]
    objects = sel.object_masks()
    assert objects[1, 1].sum() == 0 and objects[0, 1].nonzero().flatten().tolist() == [1]
    assert sel.counts().tolist() == [[3, 1], [2, 1]]
    assert sel.num_layers == 2 and sel.num_tokens == 6
    one = sel.per_image(1)
    assert one.padding_mask.shape == (1, 6) and torch.equal(one.scores, sel.scores[1:])
    assert [k.tolist() for k in one.kept_index] == [[[1, 3]], [[3]]]
    assert all(bool(v.all()) for v in one.kept_valid + one.object_valid)
    assert [o.tolist() for o in one.object_index] == [[[1]], [[]]]
    assert one.counts().tolist() == [[2, 1]]
    assert torch.equal(one.kept_masks()[:, 0], masks[:, 1])
    assert one.strides == [8, 16]


def test_record_rejects_mismatched_layer_lists():
    with pytest.raises(ValueError, match="kept_valid"):
        TokenSelection(
            scores=torch.zeros(1, 2),
            kept_index=[torch.zeros(1, 1, dtype=torch.long)],
            kept_valid=[],
            padding_mask=torch.zeros(1, 2, dtype=torch.bool),
            spatial_shapes=torch.tensor([[1, 2]]),
            level_start_index=torch.tensor([0]),
        )


@pytest.mark.parametrize("encoder", [FOCUS, SPARSE, DENSE])
def test_encoders_produce_the_record(encoder):
    _, model = tiny_model(encoder)
    x = {"image": torch.rand(3, *SMALL_INPUT) * 255}
    with torch.no_grad():
        out = model.compute_outputs(image_list(model, [x, x]))
    sel = out["encoder_output"].selection
    if encoder == DENSE:
        assert sel is None
        return
    inputs = out["encoder_inputs"]
    b, n = inputs.padding_mask.shape
    assert sel.scores.shape == (b, n) and torch.equal(sel.padding_mask, inputs.padding_mask)
    assert sel.num_layers == len(model.transformer.encoder.layers)
    assert sel.kept_masks().shape == (sel.num_layers, b, n)
    assert sel.counts().shape == (b, sel.num_layers)
    assert torch.equal(sel.kept_masks().sum(-1).t(), sel.counts())
    for index, valid in zip(sel.kept_index, sel.kept_valid):
        assert index.shape == valid.shape and index.shape[0] == b
    if encoder == FOCUS:
        assert len(sel.object_index) == sel.num_layers
        assert not (sel.object_masks() & ~sel.kept_masks()).any()  # objects among the kept
    else:
        assert sel.object_index == [] and sel.object_masks().shape == (0, b, n)
