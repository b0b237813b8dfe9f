"""The selection ablation loads its variants with the strict config loader: a misspelled
override key is an error naming it, not a silently added key that trains the published variant."""

import pytest

from projects.focus_detr.tools.selection_ablation import load_config


def test_variant_overrides_are_applied():
    cfg = load_config(["model.transformer.encoder.selector.modulation=none"])
    assert cfg.model.transformer.encoder.selector.modulation == "none"


def test_a_misspelled_variant_key_is_refused():
    with pytest.raises(KeyError, match="unknown config key.*modulaton.*did you mean"):
        load_config(["model.transformer.encoder.selector.modulaton=none"])
