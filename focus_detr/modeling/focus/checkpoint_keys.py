"""State-dict key map from the published (detrex) Focus-DETR checkpoints to this implementation.

detrex keeps the foreground score network and the modulation coefficients in the transformer
(`transformer.enc_mask_predictor`, `transformer.alpha`); here they belong to the encoder's
selector. detrex also registers the shared encoder class head under three names; this model
registers it once (as the decoder's proposal class head), so the two alias names are dropped
after checking that they hold the same values as the canonical one.
"""
from typing import Dict, Mapping

import torch

__all__ = ["DETREX_FOCUS_DETR_RENAMES", "DETREX_FOCUS_DETR_ALIASES", "convert_detrex_focus_detr_keys"]

# (detrex prefix, our prefix); applied to keys that start with the detrex prefix
DETREX_FOCUS_DETR_RENAMES = (
    ("transformer.enc_mask_predictor.", "transformer.encoder.selector.score_network."),
    ("transformer.alpha", "transformer.encoder.selector.modulation_coefficients"),
)
# alias prefix -> canonical prefix (detrex registers MLP_C three times)
DETREX_FOCUS_DETR_ALIASES = {
    "transformer.encoder.enhance_MCSP.": "class_embed.6.",
    "enhance_MCSP_layerlist.": "class_embed.6.",
}


def _alias_target(key: str):
    for alias, canonical in DETREX_FOCUS_DETR_ALIASES.items():
        if key.startswith(alias):
            rest = key[len(alias):]
            # "<i>.<param>" -> "<param>": every per-layer copy is the same module
            return canonical + rest.split(".", 1)[1]
    return None


def convert_detrex_focus_detr_keys(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename detrex Focus-DETR keys to ours and drop the class-head aliases.

    Keys that are not Focus-specific pass through unchanged (the DINO part has its own map).
    Raises ValueError when an alias differs from its canonical tensor (they are one module in
    the published model, so a difference means a corrupted or foreign checkpoint).
    """
    out = {}
    for key, value in state_dict.items():
        canonical = _alias_target(key)
        if canonical is not None:
            if canonical in state_dict and not torch.equal(state_dict[canonical], value):
                raise ValueError(f"{key} should alias {canonical} but holds different values")
            continue
        for old, new in DETREX_FOCUS_DETR_RENAMES:
            if key == old or (old.endswith(".") and key.startswith(old)):
                key = new + key[len(old):]
                break
        out[key] = value
    return out
