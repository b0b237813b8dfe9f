"""Published (detrex) Focus-DETR-R50 key names load into this implementation through the key
aliases the Focus package registers with the checkpointer."""

import torch

from focus_detr.engine.published_checkpoints import apply_key_aliases, key_aliases
from focus_detr.modeling.focus import FOCUS_DETR_KEY_ALIASES, FocusEncoder
from reference_keys import read_key_shapes

FOCUS_SPECIFIC = (
    "transformer.encoder.",
    "transformer.enc_mask_predictor.",
    "transformer.alpha",
    "enhance_MCSP_layerlist.",
)


def published_keys():
    return read_key_shapes("focus_detr_r50_detrex_keys.tsv")


def test_aliases_are_registered():
    assert set(FOCUS_DETR_KEY_ALIASES) <= set(key_aliases())


def test_published_focus_keys_map_exactly_onto_the_focus_encoder():
    keys = published_keys()
    assert len(keys) == 705
    focus = {k: torch.zeros(s) for k, s in keys.items() if k.startswith(FOCUS_SPECIFIC)}
    class_head = {k: torch.zeros(s) for k, s in keys.items() if k.startswith("class_embed.6.")}
    ours = {
        "transformer.encoder." + k: tuple(v.shape) for k, v in FocusEncoder().state_dict().items()
    }
    model_keys = set(ours) | set(class_head)
    converted = apply_key_aliases({**focus, **class_head}, model_keys)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        **ours,
        **{k: tuple(v.shape) for k, v in class_head.items()},
    }


def test_alias_values_reach_the_right_tensors():
    score = torch.randn(256)
    sd = {
        "transformer.enc_mask_predictor.layer1.0.weight": score,
        "transformer.alpha": torch.tensor([0.1, 0.2, 0.3]),
        "class_embed.6.bias": torch.ones(80),
        "enhance_MCSP_layerlist.2.bias": torch.ones(80),
    }
    model_keys = {
        "transformer.encoder.selector.score_network.layer1.0.weight",
        "transformer.encoder.selector.modulation_coefficients",
        "class_embed.6.bias",
    }
    out = apply_key_aliases(sd, model_keys)
    assert set(out) == model_keys
    assert out["transformer.encoder.selector.score_network.layer1.0.weight"] is score
    assert out["transformer.encoder.selector.modulation_coefficients"] is sd["transformer.alpha"]
