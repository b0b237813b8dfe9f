"""Inference-only speed-ups of the benchmark: folded batch norms and channels-last layout keep
the outputs."""

import pytest
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn

from focus_detr.analysis import synthetic_inputs
from focus_detr.analysis.model_io import image_list
from focus_detr.analysis.optimize import fold_batchnorm, optimize_for_inference
from tests.tools_utils import FOCUS, SMALL_INPUT, tiny_model


def _randomize(norm):
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    return norm


@pytest.mark.parametrize("norm", ["frozen", "batchnorm"])
@pytest.mark.parametrize("conv_bias", [False, True])
def test_fold_batchnorm_keeps_the_output(norm, conv_bias):
    torch.manual_seed(0)
    bn = FrozenBatchNorm2d(6) if norm == "frozen" else nn.BatchNorm2d(6)
    net = (
        nn.Sequential(
            Conv2d(3, 6, 3, padding=1, bias=conv_bias, norm=_randomize(bn)),
            Conv2d(6, 4, 1, norm=None),
        )
        .double()
        .eval()
    )
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    expected = net(x)
    assert fold_batchnorm(net) == 1
    assert net[0].norm is None and net[0].bias is not None
    torch.testing.assert_close(net(x), expected, rtol=1e-12, atol=1e-12)
    assert fold_batchnorm(net) == 0  # nothing left to fold


def test_fold_batchnorm_refuses_training_mode():
    net = Conv2d(3, 4, 1, norm=nn.BatchNorm2d(4)).train()
    with pytest.raises(RuntimeError, match="training mode"):
        fold_batchnorm(net)


def test_optimized_model_gives_the_same_features():
    _, model = tiny_model(FOCUS)
    for m in model.backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            _randomize(m)
    x = synthetic_inputs(*SMALL_INPUT)
    batch = image_list(model, x)
    # (the neck's features, not the detections: a near-tie in the top-k query selection could
    # reorder queries under float rounding)
    with torch.no_grad():
        before = model.neck(model.backbone(batch.tensor))
        done = optimize_for_inference(model)
        after = model.neck(model.backbone(batch.tensor))
        assert len(model([x[0]])[0]["instances"]) > 0  # the optimized model still runs
    assert done["folded_norms"] > 0 and done["channels_last"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
