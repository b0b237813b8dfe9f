"""A published (detrex) Focus-DETR-R50 checkpoint loads through ANY loader: detectron2's
`DetectionCheckpointer`, `torch.nn.Module.load_state_dict(strict=True)` (also wrapped, as DDP
does) and our `DetrCheckpointer`, with no missing or unexpected key and every tensor in place.
"""

from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from torch import nn

from focus_detr.engine.published_checkpoints import DetrCheckpointer, apply_key_aliases
from reference_keys import FIXTURES, read_key_shapes
from synth_weights import state_dict as synth_state_dict

CONFIG = (
    Path(__file__).resolve().parents[1] / "projects/focus_detr/configs/models/focus_detr_r50.py"
)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    keys = read_key_shapes("focus_detr_r50_detrex_keys.tsv")
    aliases = torch.load(FIXTURES / "focus_detr_r50_reference.pt", weights_only=True)["aliases"]
    weights = synth_state_dict(list(keys.items()), aliases, salt="any-loader")
    path = tmp_path_factory.mktemp("published") / "focus_detr_r50.pth"
    torch.save({"model": weights}, path)
    return weights, path


@pytest.fixture(scope="module")
def model():
    return instantiate(LazyConfig.load(str(CONFIG)).model)


def randomize(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def assert_holds(model, weights):
    """Every published tensor sits in the model tensor its (aliased) name maps to."""
    ours = model.state_dict()
    for key, value in weights.items():
        target = key if key in ours else next(iter(apply_key_aliases({key: value}, ours.keys())))
        assert torch.equal(ours[target], value), key


def test_detectron2_detection_checkpointer(model, published):
    weights, path = published
    checkpointer = DetectionCheckpointer(randomize(model))
    seen = []
    checkpointer._log_incompatible_keys = seen.append
    checkpointer.load(str(path))
    assert seen and not seen[0].missing_keys and not seen[0].unexpected_keys
    assert not seen[0].incorrect_shapes
    assert_holds(model, weights)


def test_load_state_dict_strict(model, published):
    weights, _ = published
    result = randomize(model).load_state_dict(weights, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_holds(model, weights)


def test_load_state_dict_strict_when_wrapped(model, published):
    weights, _ = published
    wrapper = nn.Module()
    wrapper.module = randomize(model)  # the layout DistributedDataParallel gives
    wrapper.load_state_dict({"module." + k: v for k, v in weights.items()}, strict=True)
    assert_holds(model, weights)


def test_our_checkpointer_strict(model, published):
    weights, path = published
    DetrCheckpointer(randomize(model), strict=True).load(str(path))
    assert_holds(model, weights)


def test_own_state_dict_still_round_trips(model):
    state = {k: v.clone() for k, v in randomize(model).state_dict().items()}
    randomize(model).load_state_dict(state, strict=True)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
