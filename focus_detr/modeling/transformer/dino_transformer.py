"""DINO's transformer: multi-scale tokens -> (swappable) encoder -> two-stage proposals with
mixed query selection -> decoder."""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ...layers.graph_capture import capturing_graph
from .encoder_api import EncoderInputs, EncoderOutput, check_padding_mode
from .multiscale import (
    encoder_reference_points,
    flatten_levels,
    token_proposals,
    valid_sizes,
)

__all__ = ["DINOTransformer"]


class DINOTransformer(nn.Module):
    """Encoder, two-stage query selection and decoder.

    Query selection (DINO's "mixed query selection"): the encoder output goes through the
    proposal projection (`enc_output` + `enc_output_norm`, padded and out-of-range tokens zeroed
    first), the decoder's extra class head scores every token, the `num_queries` tokens of highest
    max-class logit are selected and the extra box head regresses them relative to their proposal
    boxes (it is per-token, so only the selected tokens need it); their boxes become the decoder's
    reference boxes (detached); the decoder's content queries are the learnt `tgt_embed` rows.
    Padded tokens are not selected (`padding="masked"`, and always at inference): an image with
    fewer tokens than `num_queries` is too small for the query budget and raises a `ValueError`
    naming it (in a batch it would otherwise get padded tokens as queries, alone fewer queries
    than its batch mates). With `padding="published"` training selects over all tokens as the
    published code does: every padded token scores like the zeroed projected memory (a tie group
    with the valid border tokens), and when that score ranks inside the top `num_queries` padded
    tokens become queries, their reference boxes at sigmoid(+inf) = 1.

    Args:
        encoder: any encoder implementing the contract of `encoder_api` (swap it by config).
        decoder: a `DINODecoder` (owns the class/box heads).
        num_feature_levels: levels of the neck. Default 4.
        num_queries: two-stage proposals = decoder queries. Default 900.
        learnt_init_query: content queries from `tgt_embed` (DINO) instead of the selected
            encoder features. Default True.
        proposal_base_size: proposal width/height at the finest level, doubling per level.
            Default 0.05.
        proposal_valid_range: proposals with any coordinate outside this open range are invalid.
            Default (0.01, 0.99).
        padding: "masked" or "published": whether training keeps padded tokens out of the
            proposal cut (see above and `encoder_api.PADDING_MODES`); the encoder's own padding
            behaviour reads this key in the configs. Default "masked".
        The proposals (and their invalid mask) also reach the encoder in `EncoderInputs`, so an
        encoder regressing boxes from them (Sparse DETR's auxiliary heads) uses these settings.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        num_feature_levels: int = 4,
        num_queries: int = 900,
        learnt_init_query: bool = True,
        proposal_base_size: float = 0.05,
        proposal_valid_range: Tuple[float, float] = (0.01, 0.99),
        padding: str = "masked",
    ):
        super().__init__()
        self.padding = check_padding_mode(padding)
        self.encoder = encoder
        self.decoder = decoder
        self.embed_dim = c = decoder.embed_dim
        self.num_feature_levels = num_feature_levels
        self.num_queries = num_queries
        self.learnt_init_query = learnt_init_query
        self.proposal_base_size = proposal_base_size
        self.proposal_valid_range = tuple(proposal_valid_range)
        self.level_embeds = nn.Parameter(torch.empty(num_feature_levels, c))
        self.tgt_embed = nn.Embedding(num_queries, c) if learnt_init_query else None
        self.enc_output = nn.Linear(c, c)
        self.enc_output_norm = nn.LayerNorm(c)
        nn.init.normal_(self.level_embeds)
        if self.tgt_embed is not None:
            nn.init.xavier_uniform_(self.tgt_embed.weight)
        nn.init.xavier_uniform_(self.enc_output.weight)

    def check_query_budget(self, sizes: torch.Tensor, num_tokens: Optional[int] = None) -> None:
        """Raise unless every image has at least `num_queries` tokens.

        Args:
            sizes: (N, L, 2) valid (width, height) of each image at each level (`valid_sizes`).
            num_tokens: tokens of the padded batch (all levels), what a captured graph checks;
                None: nothing to check there.
        """
        if capturing_graph():
            # a captured graph serves unpadded images, whose tokens are all valid: the static
            # count decides (a shape guard in the graph, not a read of the masks)
            if num_tokens is not None and num_tokens < self.num_queries:
                raise ValueError(
                    f"the input is too small for the query budget: {num_tokens} "
                    f"tokens for num_queries={self.num_queries}; export for a "
                    "larger input size or lower model.transformer.num_queries"
                )
            return
        counts = sizes.prod(-1).sum(-1)
        smallest = int(counts.argmin())
        if int(counts[smallest]) < self.num_queries:
            levels = ", ".join(f"{h:.0f}x{w:.0f}" for w, h in sizes[smallest].tolist())
            raise ValueError(
                f"image {smallest} of the batch is too small for the query budget: "
                f"{int(counts[smallest])} tokens (levels HxW {levels}) for num_queries="
                f"{self.num_queries}; enlarge the image (e.g. the test-time resize) or lower "
                f"model.transformer.num_queries"
            )

    def project_proposals(self, memory: torch.Tensor, invalid: torch.Tensor) -> torch.Tensor:
        """(N, S, C) -> (N, S, C): zero the `invalid` tokens, then `enc_output`, `enc_output_norm`."""
        return self.enc_output_norm(self.enc_output(memory.masked_fill(invalid[..., None], 0.0)))

    def forward(
        self,
        features: List[torch.Tensor],
        masks: List[torch.Tensor],
        pos_embeds: List[torch.Tensor],
        dn_queries: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        self_attn_mask: Optional[torch.Tensor] = None,
        strides: Optional[Sequence[int]] = None,
        return_sampling: bool = False,
    ) -> Dict[str, Any]:
        """Args:
            features: L x (N, C, H_l, W_l) neck outputs; masks: L x (N, H_l, W_l) bool padding;
            pos_embeds: L x (N, C, H_l, W_l).
            dn_queries: (content (N, D, C), boxes (N, D, 4) unsigmoided) denoising queries put
                before the matching queries, or None.
            self_attn_mask: (D + num_queries, D + num_queries) bool decoder self-attention mask.
            strides: stride of each level (handed to the encoder).
            return_sampling: also return the decoder's cross-attention sampling locations and
                weights (Sparse DETR's supervision needs them).

        Returns dict (Q = D + number of selected proposals):
            logits (layers, N, Q, K), boxes (layers, N, Q, 4): decoder predictions;
            init_reference (N, Q, 4), references (layers, N, Q, 4);
            enc_logits (N, k, K), enc_boxes (N, k, 4), enc_topk_indices (N, k),
            enc_topk_scores (N, k): the selected two-stage proposals in score order;
            encoder_inputs, encoder_output; and sampling tensors if requested.
        """
        if len(features) != self.num_feature_levels:
            raise ValueError(
                f"{len(features)} feature levels for a transformer of "
                f"num_feature_levels={self.num_feature_levels}"
            )
        tokens, pos, padding_mask, shapes, start = flatten_levels(
            features, masks, pos_embeds, self.level_embeds
        )
        sizes = valid_sizes(masks)
        self.check_query_budget(sizes, tokens.shape[1])
        ratios = sizes / shapes.flip(-1).to(sizes)[None]
        proposals, invalid = token_proposals(
            shapes, sizes, padding_mask, self.proposal_base_size, self.proposal_valid_range
        )
        inputs = EncoderInputs(
            tokens=tokens,
            pos=pos,
            padding_mask=padding_mask,
            spatial_shapes=shapes,
            level_start_index=start,
            valid_ratios=ratios,
            reference_points=encoder_reference_points(shapes, ratios),
            proposal_projection=lambda x: self.project_proposals(x, invalid),
            class_head=self.decoder.proposal_class_head,
            strides=list(strides) if strides is not None else None,
            proposals=proposals,
            invalid_proposals=invalid,
        )
        encoded: EncoderOutput = self.encoder(inputs)
        memory = encoded.memory

        # two-stage proposals and query selection
        projected = self.project_proposals(memory, invalid)
        enc_logits = self.decoder.proposal_class_head(projected)
        scores = enc_logits.max(-1).values
        k = self.num_queries
        if not (self.training and self.padding == "published"):
            scores = scores.masked_fill(padding_mask, float("-inf"))
        topk_scores, topk = scores.topk(k, dim=1)
        # the box head (a per-token MLP) only on the selected tokens: the same boxes, S/k less work
        selected = projected.gather(1, topk[..., None].expand(-1, -1, self.embed_dim))
        topk_boxes = self.decoder.proposal_box_head(selected) + proposals.gather(
            1, topk[..., None].expand(-1, -1, 4)
        )  # unsigmoided
        n = memory.shape[0]
        if self.tgt_embed is not None:
            target = self.tgt_embed.weight[:k][None].expand(n, -1, -1)
        else:
            target = selected.detach()
        reference = topk_boxes.detach().sigmoid()
        if dn_queries is not None:
            target = torch.cat([dn_queries[0], target], 1)
            reference = torch.cat([dn_queries[1].sigmoid(), reference], 1)
        if self_attn_mask is not None:
            q = target.shape[1]
            self_attn_mask = self_attn_mask[:q, :q]

        out = self.decoder(
            target,
            reference,
            memory,
            padding_mask,
            shapes,
            start,
            ratios,
            self_attn_mask=self_attn_mask,
            return_sampling=return_sampling,
        )
        out["init_reference"] = reference
        out["enc_logits"] = enc_logits.gather(
            1, topk[..., None].expand(-1, -1, enc_logits.shape[-1])
        )
        out["enc_boxes"] = topk_boxes.sigmoid()
        out["enc_topk_indices"] = topk
        out["enc_topk_scores"] = topk_scores
        out["memory"] = memory
        out["encoder_inputs"] = inputs
        out["encoder_output"] = encoded
        return out
