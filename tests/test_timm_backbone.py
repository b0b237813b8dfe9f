"""TimmBackbone: any timm feature extractor (here timm's Swin-T) as a detectron2 backbone."""

import sys

import pytest
import torch

from focus_detr.modeling.backbone import TimmBackbone


def test_missing_timm_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ImportError, match="pip install timm"):
        TimmBackbone()


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(out_features=("p1", "p2")), "out_features"),
        (dict(size_divisibility=0), "size_divisibility"),
    ],
)
def test_bad_arguments_are_named(bad, message):
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=message):
        TimmBackbone(**bad)


@pytest.mark.parametrize("h, w", [(64, 96), (70, 101), (33, 45)])
def test_swin_tiny_maps_have_a_strided_backbones_sizes(h, w):
    """Any input size: padded for Swin's windows, cropped back to ceil(size / stride), NCHW."""
    pytest.importorskip("timm")
    torch.manual_seed(0)
    backbone = TimmBackbone(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4)).eval()
    shapes = backbone.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "p1": (48, 8),
        "p2": (96, 16),
        "p3": (192, 32),
    }
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, h, w))
    assert list(out) == ["p1", "p2", "p3"]
    for name, feature in out.items():
        s = shapes[name].stride
        assert feature.shape == (2, shapes[name].channels, -(-h // s), -(-w // s))
        assert feature.is_contiguous() and torch.isfinite(feature).all()
