"""Multi-category score predictor (paper Eq. 3): how likely a foreground token is an object.

p_j = s_j x max_c MLP_C(T_j), with MLP_C the two-stage encoder class head (shared with the
decoder's proposal selection) and s_j the foreground score.

Modes:
- "logit_product" (published): product of the raw max class logit and the raw foreground
  logit. Checkpoint-compatible, but two negative logits multiply to a large positive score,
  so confident background can outrank objects.
- "probability_product": sigmoid(max class logit) x sigmoid(foreground logit), Eq. 3 read
  literally ("foreground score" times "category probabilities"); monotone in both scores.
"""

from typing import Optional

import torch

__all__ = ["object_token_scores", "OBJECT_SCORE_MODES"]

OBJECT_SCORE_MODES = ("logit_product", "probability_product")


def object_token_scores(
    class_logits: Optional[torch.Tensor],
    foreground_logits: torch.Tensor,
    mode: str = "logit_product",
) -> torch.Tensor:
    """Object score of each token.

    Args:
        class_logits: (N, K, num_classes) logits of MLP_C on the tokens; None ranks by the
            foreground score alone (for DETR-like models without a two-stage class head).
        foreground_logits: (N, K) foreground logits of the same tokens.
        mode: one of OBJECT_SCORE_MODES.
    Returns:
        (N, K) scores; only their order matters.
    """
    if mode not in OBJECT_SCORE_MODES:
        raise ValueError(f"object score mode must be one of {OBJECT_SCORE_MODES}, got {mode!r}")
    if class_logits is None:
        return foreground_logits
    category = class_logits.max(dim=-1).values
    if mode == "logit_product":
        return category * foreground_logits
    return category.sigmoid() * foreground_logits.sigmoid()
