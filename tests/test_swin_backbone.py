"""`SwinTransformer` (the published Swin models' backbone, detectron2's layout): against timm's
independent Swin implementation in float64, the published key names, any input size, training;
the Focus-DETR Swin-T config built on it."""

from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from torch import nn

from focus_detr.modeling import DetrCheckpointer
from focus_detr.modeling.backbone import SwinTransformer, TimmBackbone
from focus_detr.engine.published_checkpoints import convert_swin_classifier

CONFIGS = Path(__file__).resolve().parents[1] / "projects/focus_detr/configs"

SMALL = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.0)


def timm_names(ours_state: dict) -> dict:
    """Our (detectron2) keys -> timm's feature-extractor keys: stage i is `layers_i`, and the patch
    merging that ends stage i in detectron2's layout starts stage i + 1 in timm's; the output
    norms and the (recomputable) relative position index have no timm counterpart."""
    out = {}
    for key, value in ours_state.items():
        parts = key.split(".")
        if parts[0].startswith("norm") or parts[-1] == "relative_position_index":
            continue
        if parts[0] == "layers":
            stage = int(parts[1]) + (parts[2] == "downsample")
            parts = [f"layers_{stage}"] + parts[2:]
        out["body." + ".".join(parts)] = value
    return out


@pytest.mark.parametrize("h, w", [(448, 448), (448, 672)])
def test_matches_timm_swin_at_window_aligned_sizes_float64(h, w):
    """Where no padding is needed, detectron2's Swin and timm's compute the same stages (timm
    built for an image this large, so that it shifts windows in every stage as detectron2 does);
    ours adds the output LayerNorms."""
    pytest.importorskip("timm")
    torch.manual_seed(0)
    ours = SwinTransformer(**SMALL, out_indices=(1, 2, 3)).double().eval()
    for p in ours.parameters():  # LayerNorms and biases away from their init
        p.data.add_(torch.randn_like(p) * 0.05)
    ref = TimmBackbone("swin_tiny_patch4_window7_224", img_size=(h, w), **SMALL).double().eval()
    missing, unexpected = ref.load_state_dict(timm_names(ours.state_dict()), strict=False)
    assert missing == [] and unexpected == []
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    with torch.no_grad():
        got, stages = ours(x), ref(x)
    for name, feature in got.items():
        norm = getattr(ours, f"norm{name[1:]}")
        expected = norm(stages[name].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        assert feature.shape == expected.shape
        torch.testing.assert_close(feature, expected, rtol=0, atol=1e-10)


def test_published_key_names():
    """detectron2's names, as the published Swin checkpoints carry them: relative position
    indices included, patch merging at the end of stages 0-2, output norms of stages 1-3 only."""
    keys = set(SwinTransformer(out_indices=(1, 2, 3)).state_dict())
    block = {
        f"{m}.{p}"
        for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
        for p in ("weight", "bias")
    }
    block |= {"attn.relative_position_bias_table", "attn.relative_position_index"}
    expected = {f"patch_embed.{m}.{p}" for m in ("proj", "norm") for p in ("weight", "bias")}
    for i, depth in enumerate((2, 2, 6, 2)):
        expected |= {f"layers.{i}.blocks.{j}.{k}" for j in range(depth) for k in block}
        if i < 3:
            expected |= {
                f"layers.{i}.downsample.{k}"
                for k in ("reduction.weight", "norm.weight", "norm.bias")
            }
    expected |= {f"norm{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    assert keys == expected and len(keys) == 187
    model = SwinTransformer(out_indices=(1, 2, 3))
    assert model.layers[2].blocks[5].attn.relative_position_bias_table.shape == (169, 12)
    assert model.layers[1].downsample.reduction.weight.shape == (384, 768)  # 4C -> 2C, no bias


@pytest.mark.parametrize("h, w", [(64, 96), (70, 101), (33, 45), (9, 200)])
def test_any_input_size_gives_a_strided_backbones_sizes(h, w):
    torch.manual_seed(0)
    backbone = SwinTransformer(**SMALL, out_indices=(1, 2, 3)).eval()
    shapes = backbone.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "p1": (32, 8),
        "p2": (64, 16),
        "p3": (128, 32),
    }
    assert backbone.size_divisibility == 0  # it pads internally: any input size works
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, h, w))
    for name, feature in out.items():
        s = shapes[name].stride
        assert feature.shape == (2, shapes[name].channels, -(-h // s), -(-w // s))
        assert feature.is_contiguous() and torch.isfinite(feature).all()


def test_shift_mask_separates_the_regions_the_roll_joined():
    stage = SwinTransformer(**SMALL).layers[0]  # window 7, shift 3
    mask = stage.shift_mask(14, 14, "cpu")
    assert mask.shape == (4, 49, 49)
    assert (mask[0] == 0).all()  # the top-left window holds one region only
    # bottom-right window: rows 7..13 and columns 7..13 of the rolled map are cut at 11 (= 14 - 3)
    corner = mask[3].view(7, 7, 7, 7)
    assert corner[0, 0, 3, 3] == 0 and corner[0, 0, 0, 4] == -100 and corner[0, 0, 4, 0] == -100
    assert corner[4, 4, 6, 6] == 0 and (mask == mask.transpose(1, 2)).all()


def test_imagenet_swin_classifier_weights_load_as_backbone(tmp_path):
    """An original-release ImageNet Swin file ({"model": trunk + final norm + head + shifted
    blocks' attn_mask buffers}, unprefixed) initializes the backbone; only the output norms,
    which the classifier lacks, keep their initialization."""
    torch.manual_seed(0)
    trunk = SwinTransformer(**SMALL, out_indices=(3,))
    for p in trunk.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    classifier = {k: v for k, v in trunk.state_dict().items() if not k.startswith("norm3")}
    classifier.update(
        {
            "norm.weight": torch.rand(128),
            "norm.bias": torch.rand(128),
            "head.weight": torch.randn(1000, 128),
            "head.bias": torch.zeros(1000),
            "layers.0.blocks.1.attn_mask": torch.zeros(64, 49, 49),
        }
    )
    path = tmp_path / "swin_classifier.pth"
    torch.save({"model": classifier}, path)
    model = nn.Module()
    model.backbone = SwinTransformer(**SMALL, out_indices=(1, 2, 3))
    checkpointer = DetrCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(path)))
    assert incompatible.unexpected_keys == [] and incompatible.incorrect_shapes == []
    assert sorted(incompatible.missing_keys) == [
        f"backbone.norm{i}.{p}" for i in (1, 2, 3) for p in ("bias", "weight")
    ]
    loaded = model.backbone.state_dict()
    for key, value in classifier.items():
        if key.startswith(("layers.", "patch_embed.")) and not key.endswith("attn_mask"):
            assert torch.equal(loaded[key], value), key
    with pytest.raises(KeyError, match="pos_drop.x"):
        convert_swin_classifier({"patch_embed.proj.weight": 0, "head.weight": 1, "pos_drop.x": 2})


def test_trains_with_stochastic_depth_and_bad_arguments_are_named():
    torch.manual_seed(0)
    backbone = SwinTransformer(**{**SMALL, "drop_path_rate": 0.3}).train()
    x = torch.randn(2, 3, 40, 56)
    out = backbone(x)
    sum(f.square().mean() for f in out.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in backbone.parameters())
    assert not torch.equal(backbone(x)["p3"], backbone(x)["p3"])  # stochastic depth in training
    backbone.eval()
    with torch.no_grad():
        assert torch.equal(backbone(x)["p3"], backbone(x)["p3"])
    with pytest.raises(ValueError, match="one entry per stage"):
        SwinTransformer(depths=(2, 2), num_heads=(3, 6, 12))
    with pytest.raises(ValueError, match="out_indices"):
        SwinTransformer(out_indices=(4,))


def test_swin_tiny_focus_detr_trains_and_infers_with_the_r50_models_other_keys():
    from tests.dino_utils import make_instances

    swin_cfg = LazyConfig.load(str(CONFIGS / "focus_detr_swin_tiny_224_4scale_36ep.py"))
    r50_cfg = LazyConfig.load(str(CONFIGS / "focus_detr_r50_4scale_36ep.py"))
    assert swin_cfg.model.position_embedding.temperature == 20  # the 36-epoch recipe
    assert swin_cfg.train.max_iter == r50_cfg.train.max_iter and not swin_cfg.train.init_checkpoint
    torch.manual_seed(0)
    model = instantiate(swin_cfg.model)
    backbone = model.backbone
    assert isinstance(backbone, SwinTransformer)  # the published Swin models' backbone
    assert sum(p.numel() for p in backbone.parameters()) > 27e6  # the real Swin-T
    r50_keys = set(instantiate(r50_cfg.model).state_dict())
    keys = set(model.state_dict())
    assert {
        "backbone.layers.2.blocks.5.attn.relative_position_index",
        "backbone.norm3.weight",
        "backbone.patch_embed.proj.weight",
    } <= keys - r50_keys
    assert {k for k in r50_keys - keys if not k.startswith("backbone.")} == set()

    swin_cfg.model.transformer.num_queries = 50  # the small images below have 83 and 128 tokens
    torch.manual_seed(0)
    model = instantiate(swin_cfg.model)
    backbone = model.backbone
    model.train()
    batch = [
        {"image": torch.rand(3, 64, 96) * 255, "instances": make_instances(64, 96, 2)},
        {"image": torch.rand(3, 48, 80) * 255, "instances": make_instances(48, 80, 1)},
    ]
    losses = model(batch)
    assert "select_loss" in losses
    sum(losses.values()).backward()
    grads = [p.grad for p in backbone.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[-4:])
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 96) * 255, "height": 64, "width": 96}])
    assert out[0]["instances"].pred_boxes.tensor.shape == (300, 4)


@pytest.mark.parametrize(
    "size, params",
    [
        ("tiny_224", 27.5e6),
        ("small_224", 48.8e6),
        ("base_384", 86.9e6),
        ("large_224", 195.0e6),
        ("large_384", 195.0e6),
    ],
)
def test_published_swin_model_configs(size, params):
    """Every published Focus-DETR Swin model config: its backbone's stages 1-3 feed the channel
    mapper with matching channels and strides; sizes as published (millions of parameters)."""
    cfg = LazyConfig.load(str(CONFIGS / "models" / f"focus_detr_swin_{size}.py"))
    backbone = instantiate(cfg.model.backbone)
    assert isinstance(backbone, SwinTransformer)
    shapes = backbone.output_shape()
    assert list(cfg.model.neck.in_features) == list(shapes) == ["p1", "p2", "p3"]
    for name, spec in shapes.items():
        given = cfg.model.neck.input_shapes[name]
        assert (given.channels, given.stride) == (spec.channels, spec.stride)
    window = backbone.layers[0].window_size
    assert window == (12 if size.endswith("384") else 7)
    assert abs(sum(p.numel() for p in backbone.parameters()) - params) < 0.02 * params
