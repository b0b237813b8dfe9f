"""Key aliases that load published (detrex) Focus-DETR checkpoints into this implementation.

detrex keeps the foreground score network and the modulation coefficients in the transformer
(`transformer.enc_mask_predictor`, `transformer.alpha`); here they belong to the encoder's
selector. detrex also registers the shared encoder class head (MLP_C) under three names
(`class_embed.6`, `transformer.encoder.enhance_MCSP.{i}`, `enhance_MCSP_layerlist.{i}`); this
model registers it once (the decoder's proposal class head, `class_embed.6` in the checkpoint),
so the other two names are dropped on load. The aliases are registered (on import) with the
checkpointer's registry (`focus_detr.engine.published_checkpoints`), which applies them
in `DetrCheckpointer`; `apply_key_aliases` applies them to a bare state dict.
"""

from ...engine.published_checkpoints import register_key_alias

__all__ = ["FOCUS_DETR_KEY_ALIASES"]

# (full-match regex on the detrex key, our key as a re.sub template)
FOCUS_DETR_KEY_ALIASES = (
    (r"transformer\.enc_mask_predictor\.(.+)", r"transformer.encoder.selector.score_network.\1"),
    (r"transformer\.alpha", "transformer.encoder.selector.modulation_coefficients"),
    (r"transformer\.encoder\.enhance_MCSP\.\d+\.(weight|bias)", r"class_embed.6.\1"),
    (r"enhance_MCSP_layerlist\.\d+\.(weight|bias)", r"class_embed.6.\1"),
)

for _pattern, _canonical in FOCUS_DETR_KEY_ALIASES:
    register_key_alias(_pattern, _canonical)
