"""The contract between the DINO-style transformer and its (swappable) encoder.

The transformer flattens the neck's multi-scale features and hands them to its encoder as one
`EncoderInputs`; the encoder returns an `EncoderOutput`. The dense (DINO) encoder, the Sparse DETR
encoder and the Focus encoder all implement this, so `model.transformer.encoder` can be swapped
by a config override while every other module keeps its name and weights.

An encoder that needs supervision of its own (Focus: foreground loss; Sparse DETR: DAM loss)
implements `losses(...)`; the meta-architecture adds what it returns to the loss dict, so the
losses come with the encoder automatically.

Optional encoder members (see `EncoderLossHooks`):
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
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["EncoderInputs", "EncoderLossHooks", "EncoderOutput", "PADDING_MODES", "check_padding_mode"]

# How training treats the padded tokens of a mixed-size batch (`model.transformer.padding`):
# "masked" keeps them out of every score, count and loss, so an image trains as if alone;
# "published" does what the published detrex code does (they enter the two-stage proposal cut,
# the Focus score network's pooling, its top-down upsampling and its foreground loss, and every
# image processes the batch's largest keep counts). Inference always masks.
PADDING_MODES = ("masked", "published")


def check_padding_mode(padding: str) -> str:
    """`padding` if it is one of `PADDING_MODES`, else a ValueError naming the config key."""
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES} (config key "
                         f"model.transformer.padding), got {padding!r}")
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


@dataclass
class EncoderOutput:
    """memory: (N, S, C) full token map; extras: encoder-specific tensors (selected token indices,
    foreground logits, ...) that its `losses` and the analysis tools read."""

    memory: torch.Tensor
    extras: Dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class EncoderLossHooks(Protocol):
    """What an encoder with its own supervision provides (both members optional, duck-typed)."""

    needs_decoder_sampling: bool

    def losses(self, outputs: Dict[str, Any],
               targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        ...
