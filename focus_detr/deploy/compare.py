"""Detections of two runs of one model compared as sets (exported vs eager, float32 vs float64)."""

import torch

__all__ = ["set_distance"]


def set_distance(a, b, score_scale: float, box_scale: float) -> float:
    """Largest, over the detections of `a`, of the distance to the closest same-label detection of
    `b`, in units of the tolerances: <= 1 means every detection of `a` has a same-label partner
    in `b` whose score is within `score_scale` and whose box corners are within `box_scale`
    (pixels). Order does not matter, so near-tied detections that swap places still match.

    Args:
        a, b: (boxes (K, 4), scores (K,), labels (K,)) tensors or arrays.
    """
    boxes_a, scores_a, labels_a = (torch.as_tensor(t) for t in a)
    boxes_b, scores_b, labels_b = (torch.as_tensor(t) for t in b)
    if len(scores_a) == 0:
        return 0.0
    if len(scores_b) == 0:
        return float("inf")
    box = (boxes_a[:, None].double() - boxes_b[None].double()).abs().amax(-1) / box_scale
    score = (scores_a[:, None].double() - scores_b[None].double()).abs() / score_scale
    distance = torch.maximum(box, score).masked_fill(
        labels_a[:, None] != labels_b[None], float("inf")
    )
    return float(distance.min(1).values.max())
