"""Diagnostics of the Focus encoder's token selection."""
from typing import Optional

import torch

from .token_ops import scatter_tokens

__all__ = ["kept_token_masks", "kept_foreground_recall"]


def kept_token_masks(extras: dict, num_tokens: Optional[int] = None) -> torch.Tensor:
    """(num_layers, N, S) bool: the tokens each encoder layer kept, from the `kept_index` /
    `kept_valid` lists ((N, K) per layer) of a sparse encoder's extras (Focus, Sparse DETR).
    S is `num_tokens`, by default the width of `extras["padding_mask"]`."""
    s = extras["padding_mask"].shape[1] if num_tokens is None else num_tokens
    masks = []
    for index, valid in zip(extras["kept_index"], extras["kept_valid"]):
        empty = torch.zeros(index.shape[0], s, 1, dtype=torch.bool, device=index.device)
        masks.append(scatter_tokens(empty, index, valid[..., None], valid)[..., 0])
    return torch.stack(masks)


def kept_foreground_recall(extras: dict, labels: torch.Tensor) -> torch.Tensor:
    """Per encoder layer: the fraction of foreground-labelled tokens of the batch that it kept.

    Args:
        extras: `FocusEncoder` output extras.
        labels: (N, S) bool foreground labels (e.g. `ForegroundLoss.labels`).
    Returns:
        (num_layers,) float; NaN when the batch has no foreground token.
    """
    kept = kept_token_masks(extras)
    positives = labels.sum()
    return (kept & labels[None]).flatten(1).sum(1).float() / positives.float()
