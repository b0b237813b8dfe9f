"""TimmBackbone (timm's Swin-T as a detectron2 backbone) and the Focus-DETR Swin-T configs."""
import sys
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from focus_detr.modeling.backbone import TimmBackbone

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "projects/focus_detr/configs"


def test_missing_timm_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ImportError, match="pip install timm"):
        TimmBackbone()


@pytest.mark.parametrize("bad, message", [
    (dict(out_features=("p1", "p2")), "out_features"),
    (dict(size_divisibility=0), "size_divisibility"),
])
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
        "p1": (48, 8), "p2": (96, 16), "p3": (192, 32)}
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, h, w))
    assert list(out) == ["p1", "p2", "p3"]
    for name, feature in out.items():
        s = shapes[name].stride
        assert feature.shape == (2, shapes[name].channels, -(-h // s), -(-w // s))
        assert feature.is_contiguous() and torch.isfinite(feature).all()


def test_swin_tiny_focus_detr_trains_and_infers_with_the_r50_models_other_keys():
    pytest.importorskip("timm")
    from tests.dino_utils import make_instances

    swin_cfg = LazyConfig.load(str(CONFIGS / "focus_detr_swin_tiny_224_4scale_36ep.py"))
    r50_cfg = LazyConfig.load(str(CONFIGS / "focus_detr_r50_4scale_36ep.py"))
    assert swin_cfg.model.position_embedding.temperature == 20  # the 36-epoch recipe
    assert swin_cfg.train.max_iter == r50_cfg.train.max_iter and not swin_cfg.train.init_checkpoint
    torch.manual_seed(0)
    model = instantiate(swin_cfg.model)
    backbone = model.backbone
    assert isinstance(backbone, TimmBackbone)
    assert sum(p.numel() for p in backbone.parameters()) > 27e6  # the real Swin-T
    r50_keys = set(instantiate(r50_cfg.model).state_dict())
    keys = set(model.state_dict())
    assert all(k.startswith("backbone.body.") for k in keys - r50_keys)
    assert {k for k in r50_keys - keys if not k.startswith("backbone.")} == set()

    model.train()
    batch = [{"image": torch.rand(3, 64, 96) * 255, "instances": make_instances(64, 96, 2)},
             {"image": torch.rand(3, 48, 80) * 255, "instances": make_instances(48, 80, 1)}]
    losses = model(batch)
    assert "select_loss" in losses
    sum(losses.values()).backward()
    grads = [p.grad for p in backbone.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[-4:])
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 96) * 255, "height": 64, "width": 96}])
    assert out[0]["instances"].pred_boxes.tensor.shape == (300, 4)
