"""Foreground recall of a token-sparsifying encoder's kept tokens: of the tokens that the
ground truth labels foreground (Focus-DETR's label assignment, paper Eq. 1), the fraction that
an encoder layer keeps (updates). Works for every encoder that reports its kept sets as
`kept_index` / `kept_valid` lists (one entry per layer) in `EncoderOutput.extras` (Sparse DETR,
Focus-DETR); an encoder without kept sets (dense) updates every valid token."""

from typing import Tuple

import torch

from ..focus.analysis import kept_token_masks

__all__ = ["kept_foreground_hits"]


def kept_foreground_hits(
    extras: dict, foreground: torch.Tensor, num_layers: int = 1
) -> Tuple[torch.Tensor, int]:
    """Kept foreground tokens per layer, summed over the batch.

    Args:
        extras: an encoder's `EncoderOutput.extras`.
        foreground: (N, S) bool ground-truth foreground tokens (never padded ones).
        num_layers: layers to report for an encoder without kept sets.

    Returns:
        hits (num_layers,) int64: foreground tokens kept by each layer; total: foreground
        tokens. Recall of layer l = hits[l] / total (accumulate both over batches first).
    """
    total = int(foreground.sum())
    if "kept_index" not in extras:
        return torch.full((num_layers,), total, dtype=torch.int64), total
    kept = kept_token_masks(extras, foreground.shape[1]).to(foreground.device)
    return (kept & foreground[None]).flatten(1).sum(1).to(torch.int64).cpu(), total
