"""Published (detrex) Focus-DETR-R50 key names map onto this implementation's Focus encoder."""
import ast
from pathlib import Path

import pytest
import torch

from focus_detr.modeling.focus import FocusEncoder, convert_detrex_focus_detr_keys

KEYS_TSV = Path(__file__).parent / "fixtures" / "focus_detr_r50_detrex_keys.tsv"


def published_keys():
    out = {}
    for line in KEYS_TSV.read_text().splitlines():
        if line.startswith("#"):
            continue
        name, shape, _ = line.split("\t")
        out[name] = tuple(ast.literal_eval(shape))
    return out


FOCUS_SPECIFIC = ("transformer.encoder.", "transformer.enc_mask_predictor.", "transformer.alpha",
                  "enhance_MCSP_layerlist.")


def test_published_focus_keys_map_exactly_onto_the_focus_encoder():
    keys = published_keys()
    assert len(keys) == 705
    class_head = {k: torch.full(s, 0.5) for k, s in keys.items() if k.startswith("class_embed.6.")}
    focus = {k: torch.zeros(s) for k, s in keys.items() if k.startswith(FOCUS_SPECIFIC)}
    # the aliases of the shared class head hold its values (one module in the published model)
    for k in focus:
        if "enhance_MCSP" in k:
            focus[k] = torch.full(keys[k], 0.5)
    converted = convert_detrex_focus_detr_keys({**focus, **class_head})
    ours = {"transformer.encoder." + k: tuple(v.shape) for k, v in FocusEncoder().state_dict().items()}
    got = {k: tuple(v.shape) for k, v in converted.items() if not k.startswith("class_embed.6.")}
    assert got == ours
    assert "transformer.encoder.selector.modulation_coefficients" in got
    assert not any("enhance_MCSP" in k for k in converted)


def test_alias_with_other_values_is_rejected():
    sd = {"class_embed.6.weight": torch.zeros(2, 2), "enhance_MCSP_layerlist.3.weight": torch.ones(2, 2)}
    with pytest.raises(ValueError, match="should alias class_embed.6.weight"):
        convert_detrex_focus_detr_keys(sd)
    sd["enhance_MCSP_layerlist.3.weight"] = torch.zeros(2, 2)
    assert list(convert_detrex_focus_detr_keys(sd)) == ["class_embed.6.weight"]
    # only the exact key `transformer.alpha` is renamed
    assert list(convert_detrex_focus_detr_keys({"transformer.alphabet": torch.zeros(1)})) == [
        "transformer.alphabet"]
