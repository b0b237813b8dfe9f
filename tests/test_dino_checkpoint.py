"""Checkpoint compatibility: detrex DINO-R50 key names and shapes, torchvision and detectron2
model-zoo ImageNet backbones, registered key aliases."""

import pickle

import numpy as np
import pytest
import torch
import torchvision
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.backbone import BasicStem, ResNet

from focus_detr.modeling.backbone import make_resnet_stages
from focus_detr.engine.checkpoint import SafeDetectionCheckpointer
from focus_detr.engine.published_checkpoints import (
    DetrCheckpointer,
    apply_key_aliases,
    convert_torchvision_resnet,
    key_aliases,
    register_key_alias,
)

from dino_utils import R50_MODEL
from reference_keys import read_keys_tsv


def reference_keys():
    return read_keys_tsv("dino_r50_detrex_keys.tsv")


def test_r50_state_dict_matches_detrex_keys_and_shapes():
    model = instantiate(LazyConfig.load(R50_MODEL).model)
    ours = {
        k: (tuple(v.shape), str(v.dtype).replace("torch.", ""))
        for k, v in model.state_dict().items()
    }
    ref, total = reference_keys()
    assert len(ref) == 634
    assert sorted(set(ref) - set(ours)) == [], "missing"
    assert sorted(set(ours) - set(ref)) == [], "unexpected"
    assert {k: v for k, v in ours.items() if ref[k] != v} == {}
    assert sum(p.numel() for p in model.parameters()) == total


class Wrapped(torch.nn.Module):
    """A model whose backbone is detectron2's ResNet (as in DINO)."""

    def __init__(self, depth, width=64):
        super().__init__()
        self.backbone = ResNet(
            BasicStem(3, width, norm="FrozenBN"),
            make_resnet_stages(depth, width, norm="FrozenBN"),
            out_features=["res2", "res3", "res4", "res5"],
        )
        self.head = torch.nn.Linear(2, 2)


def torchvision_features(net, x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    feats = {}
    for i in range(1, 5):
        x = getattr(net, f"layer{i}")(x)
        feats[f"res{i + 1}"] = x
    return feats


# train_net's checkpointer must apply the same conversions as the modeling one
CHECKPOINTERS = [DetrCheckpointer, SafeDetectionCheckpointer]


@pytest.mark.parametrize("checkpointer_cls", CHECKPOINTERS)
@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_resnet_loads_as_backbone(depth, checkpointer_cls, tmp_path):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, f"resnet{depth}")().eval()
    for m in tv.modules():  # non-trivial statistics, so that a wrong mapping shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    model = Wrapped(depth).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expect = torchvision_features(tv, x)
        before = model.backbone(x)
        assert not torch.allclose(before["res5"], expect["res5"])
        checkpointer = checkpointer_cls(model)
        incompatible = checkpointer._load_model(checkpointer._load_file(str(path)))
        got = model.backbone(x)
    assert incompatible.unexpected_keys == [] and incompatible.incorrect_shapes == []
    assert sorted(incompatible.missing_keys) == ["head.bias", "head.weight"]
    for k in expect:
        torch.testing.assert_close(got[k], expect[k], rtol=1e-5, atol=1e-5)


def test_convert_torchvision_names():
    sd = {
        "conv1.weight": 0,
        "bn1.running_var": 1,
        "bn1.num_batches_tracked": 2,
        "layer3.4.bn2.bias": 3,
        "layer1.0.downsample.0.weight": 4,
        "layer2.0.downsample.1.running_mean": 5,
        "fc.weight": 6,
    }
    assert convert_torchvision_resnet(sd, prefix="") == {
        "stem.conv1.weight": 0,
        "stem.conv1.norm.running_var": 1,
        "res4.4.conv2.norm.bias": 3,
        "res2.0.shortcut.weight": 4,
        "res3.0.shortcut.norm.running_mean": 5,
    }
    with pytest.raises(KeyError, match="layer9.x"):
        convert_torchvision_resnet({"conv1.weight": 0, "layer9.x": 1})


def test_detectron2_model_zoo_pkl_loads_as_backbone(tmp_path):
    """A detectron2 ImageNet .pkl (numpy arrays, no "backbone." prefix, matching heuristics) —
    the format of detectron2://ImageNetPretrained/torchvision/R-50.pkl."""
    source = Wrapped(18, width=16)
    weights = {
        k[len("backbone.") :]: v.numpy().copy()
        for k, v in source.state_dict().items()
        if k.startswith("backbone.")
    }
    path = tmp_path / "r18.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "torchvision", "matching_heuristics": True}, f)
    torch.manual_seed(1)
    target = Wrapped(18, width=16)
    DetrCheckpointer(target).load(str(path))
    for k, v in target.backbone.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), weights[k])


def test_key_aliases_rename_or_drop():
    model_keys = ["class_embed.6.weight", "class_embed.6.bias", "other"]
    w = torch.ones(2)
    ckpt = {
        "class_embed.6.weight": w,
        "heads.2.weight": w.clone(),
        "heads.3.bias": w * 2,
        "unrelated": w,
    }
    rules = [(r"heads\.\d+\.(weight|bias)", r"class_embed.6.\1")]
    out = apply_key_aliases(ckpt, model_keys, rules)
    # heads.2.weight aliases a tensor already present: dropped; heads.3.bias fills the bias
    assert set(out) == {"class_embed.6.weight", "class_embed.6.bias", "unrelated"}
    assert torch.equal(out["class_embed.6.bias"], w * 2)


@pytest.mark.parametrize("checkpointer_cls", CHECKPOINTERS)
def test_registered_alias_applies_in_the_checkpointer(checkpointer_cls, tmp_path):
    """How Focus-DETR's extra names of its shared class head load: register once, load."""
    register_key_alias(r"test_alias_layerlist\.\d+\.(.*)", r"head.\1")
    register_key_alias(r"test_alias_layerlist\.\d+\.(.*)", r"head.\1")  # idempotent
    assert key_aliases().count((r"test_alias_layerlist\.\d+\.(.*)", r"head.\1")) == 1
    model = Wrapped(18, width=16)
    sd = dict(model.state_dict())
    for i in range(3):
        sd[f"test_alias_layerlist.{i}.weight"] = sd["head.weight"]
        sd[f"test_alias_layerlist.{i}.bias"] = sd["head.bias"]
    path = tmp_path / "m.pth"
    torch.save({"model": sd}, path)
    checkpointer = checkpointer_cls(Wrapped(18, width=16))
    incompatible = checkpointer._load_model(checkpointer._load_file(str(path)))
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
