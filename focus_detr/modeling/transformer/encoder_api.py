"""The contract between the DINO-style transformer and its (swappable) encoder.

The transformer flattens the neck's multi-scale features and hands them to its encoder as one
`EncoderInputs`; the encoder returns an `EncoderOutput`. The dense (DINO) encoder, the Sparse DETR
encoder and the Focus encoder all implement this, so `model.transformer.encoder` can be swapped
by a config override while every other module keeps its name and weights.

An encoder that updates only some tokens (Focus-DETR, Sparse DETR) records which in
`EncoderOutput.selection`, one `TokenSelection` for the batch: the evaluator, the analysis tools
and the encoders' own losses read it there, whatever the encoder. A dense encoder leaves it None.

An encoder that needs supervision of its own (Focus: foreground loss; Sparse DETR: DAM loss)
implements `losses(...)`; the meta-architecture adds what it returns to the loss dict, so the
losses come with the encoder automatically.

Optional encoder members (looked up on the encoder; absent means "no"):
- ``losses(outputs, targets) -> Dict[str, Tensor]``: called by `DINO` in training; returns
  ALREADY WEIGHTED losses merged into the loss dict. `outputs` is the model's output dict
  (`DINO.compute_outputs`): it holds ``encoder_inputs`` (this `EncoderInputs`),
  ``encoder_output`` (what the encoder returned), the decoder predictions (``pred_logits``,
  ``pred_boxes``, ``aux_outputs``, ``enc_outputs``, ``enc_topk_indices``, ...) and, when
  requested, ``sampling_locations`` (layers, N, Q, heads, L, P, 2) and ``attention_weights``
  (layers, N, Q, heads, L, P) of the decoder's deformable cross attention (Q includes the
  denoising queries first: ``outputs["dn_meta"].num_queries`` of them, when present).
  `targets` are per image: ``labels`` (n,), ``boxes`` (n, 4) cxcywh normalized by the image
  size, ``boxes_xyxy`` (n, 4) in input pixels, ``image_size`` (2,) (h, w).
- ``needs_decoder_sampling: bool``: True asks the transformer to return the decoder sampling
  tensors above in training (Sparse DETR's attention-map target).
- ``selects_tokens: bool``: True when the encoder's outputs carry a `TokenSelection` (read by
  `encoder_selects_tokens`, e.g. to add a token-selection evaluator before anything runs).
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

__all__ = [
    "EncoderInputs",
    "EncoderOutput",
    "PADDING_MODES",
    "TokenSelection",
    "check_padding_mode",
    "encoder_selects_tokens",
    "index_masks",
]

# How training treats the padded tokens of a mixed-size batch (`model.transformer.padding`):
# "masked" keeps them out of every score, count and loss, so an image trains as if alone;
# "published" does what the published detrex code does (they enter the two-stage proposal cut,
# the Focus score network's pooling, its top-down upsampling and its foreground loss, and every
# image processes the batch's largest keep counts). Inference always masks.
PADDING_MODES = ("masked", "published")


def check_padding_mode(padding: str) -> str:
    """`padding` if it is one of `PADDING_MODES`, else a ValueError naming the config key."""
    if padding not in PADDING_MODES:
        raise ValueError(
            f"padding must be one of {PADDING_MODES} (config key "
            f"model.transformer.padding), got {padding!r}"
        )
    return padding


@dataclass
class EncoderInputs:
    """Batch-first multi-scale tokens, levels concatenated finest first.

    Attributes:
        tokens: (N, S, C) flattened neck features (S = sum over levels of H_l * W_l).
        pos: (N, S, C) sine position embedding plus the level embedding.
        padding_mask: (N, S) bool, True at padded tokens.
        spatial_shapes: (L, 2) int64, (H_l, W_l) per level.
        level_start_index: (L,) int64, offset of each level in S.
        valid_ratios: (N, L, 2), (valid width, valid height) fraction of each level.
        reference_points: (N, S, L, 2), each token's centre as deformable-attention reference.
        proposal_projection: callable (N, S, C) -> (N, S, C): the two-stage output projection of
            the transformer (zero padded and border tokens, `enc_output`, `enc_output_norm`);
            token selectors score its output, as the published Focus-DETR does.
        class_head: the two-stage encoder class head (the decoder's class head `num_layers`),
            shared with encoders that score tokens by class (Focus's multi-category scores).
        strides: feature stride of each level in input pixels (for label assignment).
        proposals: (N, S, 4) the transformer's two-stage proposal box of every token,
            unsigmoided (cx, cy, w, h), +inf where `invalid_proposals`; encoders that predict
            boxes relative to them (Sparse DETR's auxiliary heads) read these, so they always
            agree with the transformer's proposal settings. The dense and Focus encoders
            ignore them.
        invalid_proposals: (N, S) bool, True at padded tokens and at tokens whose proposal lies
            outside the valid range (the tokens `proposal_projection` zeroes).
    """

    tokens: torch.Tensor
    pos: torch.Tensor
    padding_mask: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    valid_ratios: torch.Tensor
    reference_points: torch.Tensor
    proposal_projection: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    class_head: Optional[nn.Module] = None
    strides: Optional[List[int]] = None
    proposals: Optional[torch.Tensor] = None
    invalid_proposals: Optional[torch.Tensor] = None


def index_masks(
    index: List[torch.Tensor], valid: List[torch.Tensor], num_tokens: int
) -> torch.Tensor:
    """Boolean token masks from padded per-layer index lists.

    Args:
        index: per layer, (B, K_l) int64 token indices (padded per image).
        valid: per layer, (B, K_l) bool, True at the slots that hold a token.
        num_tokens: N, the tokens per image.
    Returns:
        (len(index), B, N) bool, True at every token of a valid slot.
    """
    masks = []
    for idx, ok in zip(index, valid):
        # invalid slots write into a spare column, so an invalid slot can never clear (or set)
        # a token that a valid slot of the same image names
        target = torch.where(ok, idx, torch.full_like(idx, num_tokens))
        mask = torch.zeros(idx.shape[0], num_tokens + 1, dtype=torch.bool, device=idx.device)
        masks.append(mask.scatter_(1, target, True)[:, :num_tokens])
    if not masks:
        return torch.zeros(0, 0, num_tokens, dtype=torch.bool)
    return torch.stack(masks)


@dataclass
class TokenSelection:
    """Which tokens a sparse encoder kept, for a batch (or, from `per_image`, one image).

    Focus-DETR keeps fewer tokens in every layer (its cascade) and picks object tokens among
    them; Sparse DETR keeps the same tokens in every layer and has no object tokens.

    Attributes:
        scores: (B, N) the selector's logit of every token (Focus: foreground logits; Sparse
            DETR: score-network logits); meaningless at padded tokens.
        kept_index: per encoder layer, (B, K_l) int64 indices of the tokens the layer updates,
            padded to the batch's largest count K_l (Focus: best score first; Sparse DETR: the
            encoder's query order).
        kept_valid: per encoder layer, (B, K_l) bool, True at the slots of `kept_index` that
            hold a kept token.
        padding_mask: (B, N) bool, True at padded tokens (never kept).
        spatial_shapes: (L, 2) int64 (H_l, W_l) of each feature level.
        level_start_index: (L,) int64 offset of each level in N.
        object_index: per encoder layer, (B, k_l) int64 indices of the layer's object tokens
            (Focus), or empty where the encoder has none (Sparse DETR).
        object_valid: per encoder layer, (B, k_l) bool validity of `object_index`'s slots.
        strides: feature stride of each level in input pixels, or None when the model's neck
            does not tell them.
    """

    scores: torch.Tensor
    kept_index: List[torch.Tensor]
    kept_valid: List[torch.Tensor]
    padding_mask: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    object_index: List[torch.Tensor] = field(default_factory=list)
    object_valid: List[torch.Tensor] = field(default_factory=list)
    strides: Optional[List[int]] = None

    def __post_init__(self):
        if len(self.kept_index) != len(self.kept_valid):
            raise ValueError(
                f"TokenSelection: {len(self.kept_index)} kept_index layers but "
                f"{len(self.kept_valid)} kept_valid layers; give one of each per "
                f"layer"
            )
        if len(self.object_index) != len(self.object_valid):
            raise ValueError(
                f"TokenSelection: {len(self.object_index)} object_index layers but "
                f"{len(self.object_valid)} object_valid layers; give one of each per "
                f"layer"
            )

    @property
    def num_layers(self) -> int:
        """Encoder layers recorded (length of `kept_index`)."""
        return len(self.kept_index)

    @property
    def num_tokens(self) -> int:
        """N, the tokens per image (levels concatenated)."""
        return self.padding_mask.shape[1]

    def valid_tokens(self) -> torch.Tensor:
        """(B, N) bool, True at the tokens that are not padding."""
        return ~self.padding_mask

    def kept_masks(self) -> torch.Tensor:
        """(num_layers, B, N) bool, True at the tokens each encoder layer kept."""
        return index_masks(self.kept_index, self.kept_valid, self.num_tokens)

    def object_masks(self) -> torch.Tensor:
        """(layers with object tokens, B, N) bool, True at each layer's object tokens;
        (0, B, N) for an encoder without object tokens."""
        if not self.object_index:
            return torch.zeros(
                0, *self.padding_mask.shape, dtype=torch.bool, device=self.padding_mask.device
            )
        return index_masks(self.object_index, self.object_valid, self.num_tokens)

    def counts(self) -> torch.Tensor:
        """(B, num_layers) int64, the tokens each encoder layer kept per image."""
        if not self.kept_valid:
            return torch.zeros(
                self.padding_mask.shape[0], 0, dtype=torch.int64, device=self.padding_mask.device
            )
        return torch.stack([valid.sum(1) for valid in self.kept_valid], 1)

    def per_image(self, i: int) -> "TokenSelection":
        """Image `i`'s selection as a batch of one, every index list cut to that image's own
        tokens (all slots valid). Tensors stay on their device."""

        def cut(index: List[torch.Tensor], valid: List[torch.Tensor]):
            kept = [idx[i][ok[i]][None] for idx, ok in zip(index, valid)]
            return kept, [torch.ones_like(k, dtype=torch.bool) for k in kept]

        kept_index, kept_valid = cut(self.kept_index, self.kept_valid)
        object_index, object_valid = cut(self.object_index, self.object_valid)
        return TokenSelection(
            scores=self.scores[i : i + 1],
            kept_index=kept_index,
            kept_valid=kept_valid,
            padding_mask=self.padding_mask[i : i + 1],
            spatial_shapes=self.spatial_shapes,
            level_start_index=self.level_start_index,
            object_index=object_index,
            object_valid=object_valid,
            strides=self.strides,
        )


def encoder_selects_tokens(encoder: nn.Module) -> bool:
    """Whether `encoder`'s outputs carry a `TokenSelection` (its ``selects_tokens`` member,
    False when absent: an encoder that does not say keeps every token)."""
    return bool(getattr(encoder, "selects_tokens", False))


@dataclass
class EncoderOutput:
    """What an encoder returns.

    Attributes:
        memory: (B, N, C) the full token map.
        selection: the tokens a sparse encoder kept (`TokenSelection`); None for an encoder
            that updates every token.
        extras: encoder-specific tensors that only the encoder's own `losses` read (Focus: its
            selector's `ForegroundSelection` and object scores; Sparse DETR: its auxiliary
            heads' predictions).
    """

    memory: torch.Tensor
    selection: Optional[TokenSelection] = None
    extras: Dict[str, Any] = field(default_factory=dict)
