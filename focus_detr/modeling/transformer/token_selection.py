"""The per-image token selection: the record of which tokens a sparse encoder (Focus-DETR, Sparse
DETR) kept, split from a batch's `EncoderInputs` / `EncoderOutput`, part of the model's output
format (the model attaches it to eval outputs; the evaluator and the tools read it).

A *per-image selection* (what `split_selection` returns, what the model attaches to eval outputs
as ``"token_selection"``, what `TokenSelectionEvaluator` reads) is a dict:

- ``spatial_shapes`` (L, 2) int64 and ``level_start_index`` (L,) int64 of the token map;
- ``valid`` (S,) bool: not padding;
- ``image_size`` (h, w): the model input's size (before padding), in pixels;
- ``kept_index``: one (K_l,) int64 tensor per encoder layer, the tokens that layer updates
  (Focus: the cascade, largest first; Sparse DETR: the same set in every layer);
- ``object_index``: one (k_l,) tensor per layer (Focus's object tokens), or an empty list;
- ``scores`` (S,): the selector's logits (Focus foreground logits, Sparse DETR token scores);
- ``strides``: feature stride per level, or None.
"""
from typing import Any, Dict, List, Sequence

__all__ = ["has_token_selection", "split_selection"]


def has_token_selection(encoder_output) -> bool:
    """Whether an encoder output (`EncoderOutput`) records a token selection."""
    return bool(encoder_output.extras.get("kept_index"))


def split_selection(
    encoder_inputs, encoder_output, image_sizes: Sequence[Sequence[int]]
) -> List[Dict[str, Any]]:
    """Per-image selections (module docstring) from a batch's `EncoderInputs` and
    `EncoderOutput` (Focus or Sparse DETR encoder). Tensors stay on their device.

    Raises:
        ValueError: the encoder records no selection (a dense encoder).
    """
    extras = encoder_output.extras
    if not has_token_selection(encoder_output):
        raise ValueError(
            "this encoder records no token selection (extras['kept_index'] is "
            "missing or empty): a dense encoder keeps every token"
        )
    scores = extras.get("foreground_logits", extras.get("token_logits"))
    valid = ~encoder_inputs.padding_mask
    out = []
    for i, size in enumerate(image_sizes):
        kept = [idx[i][ok[i]] for idx, ok in zip(extras["kept_index"], extras["kept_valid"])]
        objects = [
            idx[i][ok[i]]
            for idx, ok in zip(extras.get("object_index", []), extras.get("object_valid", []))
        ]
        out.append(
            dict(
                spatial_shapes=encoder_inputs.spatial_shapes,
                level_start_index=encoder_inputs.level_start_index,
                valid=valid[i],
                image_size=(int(size[0]), int(size[1])),
                kept_index=kept,
                object_index=objects,
                scores=None if scores is None else scores[i],
                strides=encoder_inputs.strides,
            )
        )
    return out
