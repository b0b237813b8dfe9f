"""Quality of a token selection against foreground labels: precision = |kept and foreground| /
|kept|, recall = |kept and foreground| / |foreground|, over valid tokens, per level and overall
(`SelectionCounts`). The evaluator, the analysis tools and the ablations all count here.
"""

from dataclasses import dataclass
from typing import Any, Dict, List

import torch

from ..modeling.focus.label_assignment import pad_boxes
from ..modeling.transformer.encoder_api import TokenSelection

__all__ = [
    "SelectionCounts",
    "foreground_per_level",
    "kept_foreground_recall",
    "level_of_tokens",
    "selection_counts",
]


def level_of_tokens(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """(S,) int64 level of every token, levels concatenated finest first."""
    counts = (spatial_shapes[:, 0] * spatial_shapes[:, 1]).long()
    return torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)


def selection_counts(
    kept: torch.Tensor,
    foreground: torch.Tensor,
    valid: torch.Tensor,
    level: torch.Tensor,
    num_levels: int,
) -> "SelectionCounts":
    """Counts of one image (or a batch: any leading dims, summed).

    Args:
        kept, foreground, valid: (..., S) bool masks (kept and foreground are restricted to
            `valid` tokens here).
        level: (S,) int64 level of every token (`level_of_tokens`).
        num_levels: L.
    """
    if not (kept.shape == foreground.shape == valid.shape):
        raise ValueError(
            f"kept {tuple(kept.shape)}, foreground {tuple(foreground.shape)} and "
            f"valid {tuple(valid.shape)} masks differ in shape"
        )
    kept, foreground = kept & valid, foreground & valid
    one_hot = torch.nn.functional.one_hot(level, num_levels).to(torch.int64)  # (S, L)

    def per_level(mask):
        return (mask.reshape(-1, mask.shape[-1]).to(torch.int64) @ one_hot).sum(0)

    return SelectionCounts(
        kept=per_level(kept),
        foreground=per_level(foreground),
        true_positive=per_level(kept & foreground),
        valid=per_level(valid),
    )


@dataclass
class SelectionCounts:
    """Token counts per level (each (L,) int64), summable over images with `+`."""

    kept: torch.Tensor
    foreground: torch.Tensor
    true_positive: torch.Tensor
    valid: torch.Tensor

    def __add__(self, other: "SelectionCounts") -> "SelectionCounts":
        return SelectionCounts(
            self.kept + other.kept,
            self.foreground + other.foreground,
            self.true_positive + other.true_positive,
            self.valid + other.valid,
        )

    @staticmethod
    def _ratio(num: torch.Tensor, den: torch.Tensor) -> List[float]:
        return [float(n) / float(d) if d > 0 else float("nan") for n, d in zip(num, den)]

    def precision(self) -> List[float]:
        """Per level |kept & fg| / |kept| (nan where nothing is kept)."""
        return self._ratio(self.true_positive, self.kept)

    def recall(self) -> List[float]:
        """Per level |kept & fg| / |fg| (nan where no token is foreground)."""
        return self._ratio(self.true_positive, self.foreground)

    def overall(self) -> Dict[str, float]:
        """precision, recall, keep (kept / valid) and foreground (fg / valid) fractions over all
        levels."""
        tp, kept, fg, valid = (
            int(x.sum()) for x in (self.true_positive, self.kept, self.foreground, self.valid)
        )
        nan = float("nan")
        return {
            "precision": tp / kept if kept else nan,
            "recall": tp / fg if fg else nan,
            "keep_fraction": kept / valid if valid else nan,
            "foreground_fraction": fg / valid if valid else nan,
        }

    def summary(self, prefix: str = "") -> Dict[str, Any]:
        """Flat dict for JSON files and metrics: {prefix}precision, {prefix}recall,
        {prefix}keep_fraction, {prefix}foreground_fraction and per level
        {prefix}level{i}_precision, {prefix}level{i}_recall. A ratio without a denominator (no
        kept token, no foreground token at a level) is None, not NaN, and
        {prefix}undefined maps its key to the reason."""
        reasons = {
            "precision": "no kept token",
            "recall": "no foreground token",
            "keep_fraction": "no valid token",
            "foreground_fraction": "no valid token",
        }
        out: Dict[str, Any] = {}
        undefined = {}

        def put(key, value, reason):
            defined = value == value
            out[prefix + key] = value if defined else None
            if not defined:
                undefined[prefix + key] = reason

        for k, v in self.overall().items():
            put(k, v, reasons[k])
        for i, (p, r) in enumerate(zip(self.precision(), self.recall())):
            put(f"level{i}_precision", p, f"no kept token at level {i}")
            put(f"level{i}_recall", r, f"no foreground token at level {i} (label assignment)")
        if undefined:
            out[prefix + "undefined"] = undefined
        return out


def kept_foreground_recall(selection: TokenSelection, labels: torch.Tensor) -> torch.Tensor:
    """Per encoder layer: the fraction of the batch's foreground-labelled tokens that it kept.

    Args:
        selection: a sparse encoder's `TokenSelection` of the batch.
        labels: (B, N) bool foreground labels (e.g. `ForegroundLoss.labels`).
    Returns:
        (num_layers,) float; NaN when the batch has no foreground token.
    """
    shapes = selection.spatial_shapes
    level = level_of_tokens(shapes)
    valid = selection.valid_tokens()
    recalls = [
        selection_counts(kept, labels, valid, level, shapes.shape[0]).overall()["recall"]
        for kept in selection.kept_masks()
    ]
    return torch.tensor(recalls, dtype=torch.float32)


def foreground_per_level(images, assigner, level_shapes_of=None) -> Dict[str, Any]:
    """Ground-truth foreground tokens per feature level over a set of images: what a label
    assignment gives each level (e.g. to check that its scale ranges suit the images' sizes).

    Args:
        images: iterable of ((H, W) image size, (M, 4) absolute xyxy boxes) per image.
        assigner: a `ForegroundLabelAssigner` (its strides and scale ranges).
        level_shapes_of: (H, W) -> [(h, w)] per level; default ceil(H / s) x ceil(W / s) per
            stride s (the backbone's feature sizes for a size-divisible input).
    Returns:
        {"foreground": [count per level], "tokens": [count per level], "images": n}.
    """
    if level_shapes_of is None:

        def level_shapes_of(size):
            return [(-(-size[0] // s), -(-size[1] // s)) for s in assigner.strides]

    num_levels = len(assigner.strides)
    foreground, tokens, count = [0] * num_levels, [0] * num_levels, 0
    for size, boxes in images:
        shapes = level_shapes_of(tuple(int(v) for v in size))
        labels = assigner(*pad_boxes([torch.as_tensor(boxes).reshape(-1, 4)]), shapes)[0]
        for level, part in enumerate(labels.split([h * w for h, w in shapes])):
            foreground[level] += int(part.sum())
            tokens[level] += part.numel()
        count += 1
    return {"foreground": foreground, "tokens": tokens, "images": count}
