"""Diagnostics of the Focus encoder's token selection."""
import torch

from .token_ops import scatter_tokens

__all__ = ["kept_token_masks", "kept_foreground_recall"]


def kept_token_masks(extras: dict) -> torch.Tensor:
    """(num_layers, N, S) bool: the tokens each encoder layer kept, from `FocusEncoder` extras."""
    n, s = extras["padding_mask"].shape
    masks = []
    for index, valid in zip(extras["kept_index"], extras["kept_valid"]):
        empty = torch.zeros(n, s, 1, dtype=torch.bool, device=index.device)
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
