"""`focus_detr.modeling.optimize`, the inference transforms applied after construction: the
constructor builds an untransformed model; `optimize` folds the backbone's norms and installs
reduced precision, computes what the untransformed model computes (float64), is idempotent and
declarative, refuses a bad precision before changing anything; the config keys
`model.fold_backbone_norms` / `model.reduced_precision` reach it through `instantiate_model` and
the strict override check."""

import copy

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from torch import nn

from focus_detr.analysis import load_config
from focus_detr.layers.folded_conv import FoldedNormConv2d
from focus_detr.modeling import instantiate_model, optimize

import dino_utils


def _folded(model):
    return sum(isinstance(m, FoldedNormConv2d) for m in model.modules())


def _hooked(model):
    return sum(len(m._forward_pre_hooks) for m in model.modules())


def _plain_model():
    torch.manual_seed(0)
    return instantiate(dino_utils.tiny_cfg().model).eval()


def test_constructor_builds_without_transforms():
    model = _plain_model()
    assert _folded(model) == 0 and _hooked(model) == 0
    optimize(model)
    assert _folded(model) > 0 and model.fold_backbone_norms is True
    assert _hooked(model) == 0 and model.reduced_precision is None


def test_optimized_model_computes_what_the_plain_one_computes_in_float64():
    plain = _plain_model().double()
    fast = optimize(copy.deepcopy(plain))
    assert list(fast.state_dict()) == list(plain.state_dict())
    batch = dino_utils.make_batch([(96, 128), (64, 80)], [2, 3])
    with torch.no_grad():
        images = plain.preprocess_image(batch)
        images.tensor = images.tensor.double()
        ours, ref = fast.compute_outputs(images), plain.compute_outputs(images)
    assert any(getattr(m, "_folded_cache", None) is not None for m in fast.modules())
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-9, atol=1e-9)


def test_optimize_is_idempotent_and_declarative():
    model = _plain_model()
    optimize(model, reduced_precision="bfloat16")
    folded, hooked = _folded(model), _hooked(model)
    assert hooked == 3  # backbone, neck, encoder: one autocast entry each
    optimize(model, reduced_precision="bfloat16")
    assert (_folded(model), _hooked(model)) == (folded, hooked)
    # a later call with other values replaces the earlier choices
    optimize(model, fold_norms=False)
    assert _folded(model) == 0 and _hooked(model) == 0
    assert model.fold_backbone_norms is False and model.reduced_precision is None
    # found on the modules, so a copy's hooks go too
    twin = copy.deepcopy(optimize(model, reduced_precision="bf16"))
    assert _hooked(optimize(twin)) == 0 and _hooked(model) == 3


def test_unknown_precision_is_refused_naming_the_value_before_any_change():
    model = _plain_model()
    with pytest.raises(ValueError, match=r"got 'int8'"):
        optimize(model, reduced_precision="int8")
    with pytest.raises(ValueError, match=r"no submodule named \['encoderr'\]"):
        optimize(model, reduced_precision="bf16", reduced_precision_modules=["encoderr"])
    assert _folded(model) == 0 and _hooked(model) == 0
    with pytest.raises(TypeError, match="no `backbone`"):
        optimize(nn.Linear(2, 2))


def test_config_keys_reach_optimize_through_instantiate_model():
    cfg = dino_utils.tiny_cfg()
    assert _folded(instantiate_model(cfg.model)) > 0  # folded by default, as configs build it
    cfg.model.fold_backbone_norms = False
    cfg.model.reduced_precision = "bf16"
    cfg.model.reduced_precision_modules = ["backbone"]
    model = instantiate_model(cfg.model)
    assert _folded(model) == 0 and _hooked(model) == 1
    assert cfg.model.reduced_precision == "bf16"  # the node is left as it was
    with pytest.raises(TypeError):  # detectron2's instantiate: the constructor takes no such key
        instantiate(cfg.model)
    other = L(nn.Linear)(in_features=2, out_features=2, reduced_precision="bf16")
    with pytest.raises(KeyError, match="model.reduced_precision.*DINO-family"):
        instantiate_model(other)


def test_overrides_accept_the_inference_keys_strictly():
    path = dino_utils.TINY_MODEL
    cfg = load_config(path, ["model.fold_backbone_norms=false", "model.reduced_precision=bf16"])
    assert cfg.model.fold_backbone_norms is False and cfg.model.reduced_precision == "bf16"
    with pytest.raises(KeyError, match="did you mean 'reduced_precision'"):
        load_config(path, ["model.reduced_precison=bf16"])
    with pytest.raises(TypeError, match="model.fold_backbone_norms.*expected type bool"):
        load_config(path, ["model.fold_backbone_norms=3"])
