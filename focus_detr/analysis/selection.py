"""Eval outputs that carry the model's token selection.

Within `record_token_selection`, a DINO-family model with a sparse encoder adds, to each image's
eval output, ``"token_selection"``: that image's `TokenSelection`
(`focus_detr.modeling.transformer.encoder_api`), which `TokenSelectionEvaluator` scores with
`focus_detr.evaluation.selection_metrics`.
"""

from contextlib import contextmanager

from torch import nn

__all__ = ["record_token_selection"]


@contextmanager
def record_token_selection(model: nn.Module):
    """Within the block, a DINO-family model's eval outputs carry ``"token_selection"`` (module
    docstring): sets the model's `return_token_selection` flag and restores it afterwards.

    Training outputs (loss dicts) are left alone; a dense encoder adds nothing.
    """
    previous = model.return_token_selection
    model.return_token_selection = True
    try:
        yield model
    finally:
        model.return_token_selection = previous
