"""Foreground recall of a token-sparsifying encoder's kept tokens: of the tokens that the
ground truth labels foreground (Focus-DETR's label assignment, paper Eq. 1), the fraction that
an encoder layer keeps (updates). Works for every encoder that reports its kept sets as
`kept_index` / `kept_valid` lists (one entry per layer) in `EncoderOutput.extras` (Sparse DETR,
Focus-DETR); an encoder without kept sets (dense) updates every valid token."""

from typing import Tuple

import torch

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
    hits = []
    for index, valid in zip(extras["kept_index"], extras["kept_valid"]):
        kept = torch.zeros_like(foreground)
        # invalid slots point to an extra column that is dropped
        target = torch.where(valid, index, torch.full_like(index, foreground.shape[1]))
        kept = torch.cat([kept, kept[:, :1]], 1).scatter(1, target, True)[:, :-1]
        hits.append(int((kept & foreground).sum()))
    return torch.tensor(hits, dtype=torch.int64), total
