"""`ForegroundTokenSelector`: Focus-DETR's foreground token selector (FTS, paper Sec. 3.2, Eq. 2).

One score network scores every feature level; scores are passed between levels (top-down by
default: each finer level is modulated by the upsampled score of the level above), giving raw
foreground logits for all tokens. Each image then keeps its best-scored tokens, fewer in every
encoder layer (the cascade).

Modulation (`modulation_target`):
- "features" (published, Eq. 2): F_l <- F_l * (1 + a * UP(S_{l+1})) right before the score
  network. Its first LayerNorm cancels any positive per-token factor, so the modulation only acts
  where the factor is negative (or ~0): checkpoint-compatible, but mostly inert.
- "logits" (this project's variant): S_l = MLP_F(F_l) + a * UP(S_{l+1}). The coarser level's
  log-odds reach the finer score for every token and every a != 0, linearly in a (a
  well-conditioned gradient), at no extra cost; a = 0 gives independent per-level scores, as
  with the published form.
"""

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ...layers.graph_capture import (
    capturing_dynamic_shapes,
    capturing_graph,
    level_shapes,
    level_starts,
)
from ..transformer.encoder_api import check_padding_mode
from .score_network import TokenScoreNetwork
from .token_ops import level_valid_sizes, resize_valid_region

__all__ = [
    "ForegroundSelection",
    "ForegroundTokenSelector",
    "MODULATIONS",
    "MODULATION_TARGETS",
    "PUBLISHED_CASCADE_RATIOS",
]

MODULATIONS = ("top_down", "bottom_up", "none")
MODULATION_TARGETS = ("features", "logits")
# relative keep count of each of the six encoder layers (the published cascade)
PUBLISHED_CASCADE_RATIOS = (1.0, 0.8, 0.6, 0.6, 0.4, 0.2)


@dataclass
class ForegroundSelection:
    """What the selector decided for a batch.

    Attributes:
        logits: (N, S) raw foreground logits of every token (padded tokens: meaningless).
        ranking: (N, K) token indices by descending logit, padded tokens last; K = the largest
            keep count of any layer and image. Layer l of image n keeps `ranking[n, :keep_counts[n, l]]`.
        keep_counts: (N, num_layers) int64 tokens kept per image and encoder layer.
        valid_token_counts: (N,) int64 unpadded tokens per image.
        foreground_token_counts: (N,) int64 int(valid * foreground_ratio) + 1 (published
            `focus_token_nums`; may exceed the valid count, keep counts never do when masked).
        write_counts: (N, num_layers) int64 of the kept tokens, how many (a prefix) the layer's
            output is written back for. Equal to `keep_counts` except in training with
            `padding="published"`, where every image processes the batch's largest keep counts
            and writes back min(that, its foreground count). None = `keep_counts`.
        object_logits: (N, S) the logits the kept tokens' object scores read: `logits`, except in
            published-padding training, where padded tokens hold the batch's lowest logit (a
            processed padded token competes for the object tokens with it). None = `logits`.
        widths: K_l of each layer (the largest keep count) as Python ints, known without reading
            `keep_counts`: set under graph capture (see `ForegroundTokenSelector.static_keep_counts`).
    """

    logits: torch.Tensor
    ranking: torch.Tensor
    keep_counts: torch.Tensor
    valid_token_counts: torch.Tensor
    foreground_token_counts: torch.Tensor
    write_counts: Optional[torch.Tensor] = None
    object_logits: Optional[torch.Tensor] = None
    widths: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        if self.write_counts is None:
            self.write_counts = self.keep_counts
        if self.object_logits is None:
            self.object_logits = self.logits

    def kept(self, layer: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Layer `layer`'s kept tokens as a padded index list (N, K_l) and validity mask (N, K_l)."""
        counts = self.keep_counts[:, layer]
        k = self._width(layer)
        index = self.ranking[:, :k]
        return index, self._prefix_mask(k, counts)

    def written(self, layer: int) -> torch.Tensor:
        """(N, K_l) bool: the slots of `kept(layer)` whose layer output is written back."""
        return self._prefix_mask(self._width(layer), self.write_counts[:, layer])

    def _width(self, layer: int) -> int:
        if self.widths is not None:
            return self.widths[layer]
        return int(self.keep_counts[:, layer].max()) if self.keep_counts.numel() else 0

    def _prefix_mask(self, k: int, counts: torch.Tensor) -> torch.Tensor:
        return torch.arange(k, device=self.ranking.device)[None] < counts[:, None]


class ForegroundTokenSelector(nn.Module):
    """Scores all tokens of a multi-scale map and picks each encoder layer's foreground tokens.

    Args:
        score_network: the shared per-level scorer (MLP_F); default `TokenScoreNetwork(embed_dim)`.
        embed_dim: token channels (used only to build the default score network). Default 256.
        num_levels: feature levels. Default 4.
        modulation: "top_down" (coarse to fine, published), "bottom_up" (fine to coarse) or
            "none" (independent levels): the paper's Table 5.
        modulation_target: "features" (published) or "logits" (see the module docstring).
        coefficient_init_range: modulation coefficients start uniform in [-r, r]. Default 0.3.
        keep_ratio: mean fraction of valid tokens kept per encoder layer (the paper's alpha of
            Table 6), at most mean(c) / max(c) (0.6 for the default cascade: its first layer then
            keeps every token). Default 0.3.
        cascade_ratios: relative keep count per encoder layer. Default `PUBLISHED_CASCADE_RATIOS` (1, .8, .6, .6, .4, .2).
            Layer l keeps int(c_l * (int(valid * keep_ratio / mean(c)) + 1)) tokens (c_l as float32,
            the published arithmetic: 0.5 / 0.4 / 0.3 / 0.3 / 0.2 / 0.1 of the valid tokens by
            default), at most the valid count.
        padding: "masked" (default) or "published", for training on padded batches (inference
            always masks). Masked: padded tokens are left out of the score network's mean pool,
            the top-down upsampling resizes each image's valid region alone, and each image keeps
            its own counts. Published (the detrex code): pooling and upsampling run over the whole
            padded canvas, padded tokens rank last with the batch's lowest logit, every image
            processes the batch's largest keep count of each layer and writes back only its own
            foreground count (`ForegroundSelection.write_counts`).
    """

    def __init__(
        self,
        score_network: Optional[nn.Module] = None,
        embed_dim: int = 256,
        num_levels: int = 4,
        modulation: str = "top_down",
        modulation_target: str = "features",
        coefficient_init_range: float = 0.3,
        keep_ratio: float = 0.3,
        cascade_ratios: Sequence[float] = PUBLISHED_CASCADE_RATIOS,
        padding: str = "masked",
    ):
        super().__init__()
        self.padding = check_padding_mode(padding)
        if modulation not in MODULATIONS:
            raise ValueError(f"modulation must be one of {MODULATIONS}, got {modulation!r}")
        if modulation_target not in MODULATION_TARGETS:
            raise ValueError(
                f"modulation_target must be one of {MODULATION_TARGETS}, got {modulation_target!r}"
            )
        if not 0.0 < keep_ratio:
            raise ValueError(f"keep_ratio must be positive, got {keep_ratio}")
        if len(cascade_ratios) == 0 or min(cascade_ratios) < 0 or max(cascade_ratios) <= 0:
            raise ValueError(
                f"cascade_ratios must be non-negative, not all 0, got {cascade_ratios}"
            )
        self.score_network = (
            score_network if score_network is not None else TokenScoreNetwork(embed_dim)
        )
        self.num_levels = num_levels
        self.modulation = modulation
        self.modulation_target = modulation_target
        self.keep_ratio = keep_ratio
        mean_cascade = math.fsum(cascade_ratios) / len(cascade_ratios)
        self.foreground_ratio = keep_ratio / mean_cascade
        if self.foreground_ratio * max(cascade_ratios) > 1.0 + 1e-9:
            # the widest layer would keep more than all tokens: clamped, the mean falls short
            raise ValueError(
                f"keep_ratio={keep_ratio} with cascade_ratios={tuple(cascade_ratios)} asks layer "
                f"{list(cascade_ratios).index(max(cascade_ratios))} to keep "
                f"{self.foreground_ratio * max(cascade_ratios):.3g}x the valid tokens; with this "
                f"cascade keep_ratio can be at most {mean_cascade / max(cascade_ratios):.3g}"
            )
        self.register_buffer(
            "cascade_ratios", torch.tensor(cascade_ratios, dtype=torch.float32), persistent=False
        )
        self._cascade_ratios = tuple(float(c) for c in cascade_ratios)  # readable when capturing
        if modulation != "none":
            self.modulation_coefficients = nn.Parameter(
                torch.empty(num_levels - 1).uniform_(
                    -coefficient_init_range, coefficient_init_range
                )
            )
        else:
            self.register_parameter("modulation_coefficients", None)

    @property
    def num_layers(self) -> int:
        return len(self.cascade_ratios)

    def score(
        self,
        features: torch.Tensor,
        padding_mask: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
    ) -> torch.Tensor:
        """Foreground logits of every token.

        Args:
            features: (N, S, C) tokens to score (Focus-DETR: the two-stage projection of neck
                features + position embedding).
            padding_mask: (N, S) bool, True at padded tokens.
            spatial_shapes: (L, 2) int64 (H, W) per level, finest first.
            level_start_index: (L,) int64.
        Returns:
            (N, S) raw logits.
        """
        n, s, _ = features.shape
        shapes = level_shapes(spatial_shapes)
        starts = level_starts(spatial_shapes, level_start_index)
        if len(shapes) != self.num_levels:
            raise ValueError(f"selector built for {self.num_levels} levels, got {len(shapes)}")
        # published training scores the padded canvas as if it were all image
        # (a captured graph serves unpadded images)
        has_padding = (
            not self._published_padding() and not capturing_graph() and bool(padding_mask.any())
        )
        valid_sizes = level_valid_sizes(padding_mask, shapes, starts) if has_padding else None
        if self.modulation == "bottom_up":
            order = list(range(self.num_levels))
        else:
            order = list(reversed(range(self.num_levels)))
        logits = [None] * self.num_levels
        previous = None  # (level, (N, h, w) logits) of the level scored just before
        for step, level in enumerate(order):
            (h, w), start = shapes[level], starts[level]
            tokens = features[:, start : start + h * w]
            valid = ~padding_mask[:, start : start + h * w] if has_padding else None
            prior = None
            if previous is not None and self.modulation != "none":
                prev_level, prev_map = previous
                if has_padding:
                    prior = resize_valid_region(
                        prev_map, valid_sizes[:, prev_level], (h, w), valid_sizes[:, level]
                    )
                else:
                    prior = resize_valid_region(prev_map, None, (h, w), None)
                prior = prior.flatten(1)
                coefficient = self.modulation_coefficients[step - 1]
                if self.modulation_target == "features":
                    tokens = tokens + tokens * prior[..., None] * coefficient
            level_logits = self.score_network(tokens, valid)
            if prior is not None and self.modulation_target == "logits":
                level_logits = level_logits + coefficient * prior
            logits[level] = level_logits
            previous = (level, level_logits.view(n, h, w))
        return torch.cat(logits, dim=1)

    def _published_padding(self) -> bool:
        return self.training and self.padding == "published"

    def keep_counts(
        self, padding_mask: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(valid (N,), foreground (N,), keep (N, num_layers)) token counts, all int64.

        Keep counts are each image's own, at most its valid count; in published-padding training
        they are the batch's largest for every image (see `ForegroundSelection.write_counts`)."""
        valid = (~padding_mask).sum(1)
        foreground = (valid.to(torch.float32) * self.foreground_ratio).to(torch.int64) + 1
        cascade = self.cascade_ratios.to(padding_mask.device)
        if self._published_padding():
            largest = foreground.max(0, keepdim=True).values
            keep = (cascade[None, :] * largest.to(torch.float32)[:, None]).to(torch.int64)
            return valid, foreground, keep.expand(len(valid), -1)
        keep = (cascade[None, :] * foreground.to(torch.float32)[:, None]).to(torch.int64)
        return valid, foreground, torch.minimum(keep, valid[:, None])

    def static_keep_counts(self, num_tokens: int) -> Tuple[int, ...]:
        """Keep count of each layer for an unpadded image of `num_tokens` tokens, as Python ints
        computed with `keep_counts`' float32 arithmetic: what a captured graph needs, since it
        cannot read counts from tensors."""
        f32 = np.float32
        foreground = int(f32(num_tokens) * f32(self.foreground_ratio)) + 1
        return tuple(min(int(f32(c) * f32(foreground)), num_tokens) for c in self._cascade_ratios)

    def graph_keep_counts(self, num_tokens: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """`static_keep_counts` for a token count that is a graph value (a dynamic-shape
        export): 0-dim int64 tensors, computed with `keep_counts`' float32 arithmetic in the graph."""
        num_tokens = torch.as_tensor(num_tokens, dtype=torch.int64)
        foreground = (num_tokens.to(torch.float32) * self.foreground_ratio).to(torch.int64) + 1
        keep = (self.cascade_ratios.to(num_tokens.device) * foreground.to(torch.float32)).to(
            torch.int64
        )
        keep = torch.minimum(keep, num_tokens)
        return tuple(keep.unbind(0))

    def forward(
        self,
        features: torch.Tensor,
        padding_mask: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
    ) -> ForegroundSelection:
        """Score all tokens (see :meth:`score`) and rank them, padded tokens last."""
        logits = self.score(features, padding_mask, spatial_shapes, level_start_index)
        valid, foreground, keep = self.keep_counts(padding_mask)
        widths = None
        if capturing_dynamic_shapes():
            widths = self.graph_keep_counts(padding_mask.shape[1])
            k = torch.stack(widths).max()
        elif capturing_graph():
            widths = self.static_keep_counts(padding_mask.shape[1])
            k = max(widths)
        else:
            k = int(keep.max()) if keep.numel() else 0
        # selection is not differentiable: rank detached logits, padded tokens last
        if self._published_padding():
            # detrex ranks by the logits with padded tokens at the batch's lowest logit, and its
            # object scores read those values (where a padded token is processed)
            object_logits = logits.masked_fill(padding_mask, logits.detach().min())
            ranked = object_logits.detach()
            written = torch.minimum(keep, foreground[:, None])
        else:
            object_logits = logits
            ranked = logits.detach().masked_fill(padding_mask, float("-inf"))
            written = keep
        ranking = torch.topk(ranked, k, dim=1).indices
        return ForegroundSelection(
            logits, ranking, keep, valid, foreground, written, object_logits, widths
        )
