"""`SparseDetrEncoder`: Sparse DETR's encoder (Roh et al., ICLR 2022) for the DINO family,
implementing the transformer/encoder contract of `encoder_api`.

Before the encoder, a token score network (Sparse DETR's "mask predictor", shared with
Focus-DETR: `TokenScoreNetwork`) scores every token and each image keeps its top
int(valid * keep_ratio) + 1 valid tokens, once. Every encoder layer updates only those tokens:
they are the queries of a standard deformable encoder layer whose values are the CURRENT full
token map, and are scattered back into it after the layer. Tokens never kept keep their input
values; padded tokens are never kept.

Input of the score network: the neck tokens plus position embedding, projected by the
transformer's two-stage proposal projection (padded/border tokens zeroed, `enc_output`,
`enc_output_norm`), as the published Sparse DETR projects its backbone tokens (and as
Focus-DETR does). The global half of the score network is pooled over each image's valid tokens
only (the published code also pools over padding).

Supervision (`losses`, added by the meta-architecture in training):
- the decoder cross-attention map target (see `attention_map`) from the matching queries of the
  decoder (denoising queries left out), multilabel soft margin loss, weight 1;
- optionally the auxiliary encoder loss: class and box heads on the kept tokens after each of
  the first `num_layers - 1` layers (the last layer's output feeds the two-stage proposals, which
  have their own `_enc` loss), boxes relative to each token's two-stage proposal box (the
  transformer's, handed over as `EncoderInputs.proposals`), Hungarian matched, at the main loss
  weights.
"""

import copy
import math
from typing import Dict, List, Optional

import torch
from torch import nn

from ...layers import MLP, init_deformable_transformer
from ...layers.graph_capture import capturing_dynamic_shapes, capturing_graph
from ..criterion import DINOCriterion
from ..focus.score_network import TokenScoreNetwork
from ..focus.token_ops import gather_tokens, scatter_tokens
from ..matcher import HungarianMatcher
from ..transformer.encoder_api import EncoderInputs, EncoderOutput, TokenSelection
from .attention_map import graph_sparse_keep_count, sparse_keep_counts, static_sparse_keep_count
from .losses import AttentionMapLoss, EncoderAuxiliaryLoss

__all__ = ["SparseDetrEncoder"]


class SparseDetrEncoder(nn.Module):
    """Args:
    layer: the encoder layer to replicate (a `DeformableEncoderLayer`: called as
        layer(query, query_pos, reference_points, spatial_shapes, level_start_index,
        padding_mask, value=full_map)).
    num_layers: encoder layers. Default 6.
    keep_ratio: rho, fraction of each image's valid tokens kept. Default 0.3 (Table 1).
    score_network: token scorer; default `TokenScoreNetwork(embed_dim, embed_dim)` (published).
    attention_map_loss: default `AttentionMapLoss()` (weight 1, `loss_mask_prediction`).
    num_classes: classes of the auxiliary class heads. Default 80.
    aux_loss: auxiliary encoder loss on/off. Default True (published).
    num_aux_layers: layers with auxiliary heads (the first ones). Default None =
        num_layers - 1.
    aux_criterion: matcher, loss terms and weights of the auxiliary loss; default a
        `DINOCriterion(num_classes, HungarianMatcher())` (DINO's costs and main weights).
        Configs pass the model's criterion so both stay the same.
    box_head_layers: layers of each auxiliary box MLP. Default 3.
    prior_prob: initial foreground probability of the auxiliary class heads. Default 0.01.
    spatial_query_order: keep the selected tokens in token-index (spatial) order rather than by
        score: the same set and result, but neighbouring queries sample neighbouring features,
        so the deformable attention's memory reads are local (faster). Default True.
    """

    needs_decoder_sampling = True  # the attention-map target needs the decoder's sampling
    selects_tokens = True

    def __init__(
        self,
        layer: nn.Module,
        num_layers: int = 6,
        keep_ratio: float = 0.3,
        score_network: Optional[nn.Module] = None,
        attention_map_loss: Optional[AttentionMapLoss] = None,
        num_classes: int = 80,
        aux_loss: bool = True,
        num_aux_layers: Optional[int] = None,
        aux_criterion: Optional[nn.Module] = None,
        box_head_layers: int = 3,
        prior_prob: float = 0.01,
        spatial_query_order: bool = True,
    ):
        super().__init__()
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        num_aux_layers = num_layers - 1 if num_aux_layers is None else num_aux_layers
        if not 0 <= num_aux_layers <= num_layers:
            raise ValueError(f"num_aux_layers must be in [0, {num_layers}], got {num_aux_layers}")
        self.embed_dim = c = layer.embed_dim
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.keep_ratio = keep_ratio
        self.score_network = score_network if score_network is not None else TokenScoreNetwork(c, c)
        self.attention_map_loss = (
            attention_map_loss if attention_map_loss is not None else AttentionMapLoss()
        )
        self.num_classes = num_classes
        self.num_aux_layers = num_aux_layers if aux_loss else 0
        self.spatial_query_order = spatial_query_order
        self.init_weights()
        # built after init_weights, which would re-initialize their matrices
        self.aux_class_heads = nn.ModuleList(
            nn.Linear(c, num_classes) for _ in range(self.num_aux_layers)
        )
        self.aux_box_heads = nn.ModuleList(
            MLP(c, c, 4, box_head_layers) for _ in range(self.num_aux_layers)
        )
        bias = -math.log((1 - prior_prob) / prior_prob)
        for head in self.aux_class_heads:
            nn.init.constant_(head.bias, bias)
        for head in self.aux_box_heads:  # start from the proposal boxes
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        if self.num_aux_layers and aux_criterion is None:
            aux_criterion = DINOCriterion(num_classes, HungarianMatcher())
        self.aux_criterion = aux_criterion if self.num_aux_layers else None

    def init_weights(self):
        """Xavier-uniform matrices (layers, score network), then Deformable-DETR's init of the
        deformable attention."""
        init_deformable_transformer(self)

    # ---- selection ---------------------------------------------------------------------------
    def score_tokens(self, inputs: EncoderInputs) -> torch.Tensor:
        """(N, S) raw logits of the score network on the projected tokens + positions."""
        features = inputs.tokens + inputs.pos
        if inputs.proposal_projection is not None:
            features = inputs.proposal_projection(features)
        return self.score_network(features, ~inputs.padding_mask)

    def select(self, logits: torch.Tensor, padding_mask: torch.Tensor):
        """Each image's top int(valid * keep_ratio) + 1 valid tokens.

        Returns:
            index (N, K) token indices (K = the batch's largest count) by descending logit, or
            each image's kept tokens in ascending token order with `spatial_query_order`;
            valid (N, K) bool (slot k of image n is kept iff k < counts[n]); counts (N,) int64.
        """
        counts = sparse_keep_counts(padding_mask, self.keep_ratio)
        if capturing_dynamic_shapes():  # an unpadded image of a size the graph computes
            k = graph_sparse_keep_count(padding_mask.shape[1], self.keep_ratio)
        elif capturing_graph():  # an unpadded image: the count known to Python
            k = static_sparse_keep_count(padding_mask.shape[1], self.keep_ratio)
        else:
            k = int(counts.max()) if counts.numel() else 0
        ranked = logits.detach().masked_fill(padding_mask, float("-inf"))
        index = ranked.topk(k, dim=1).indices
        valid = torch.arange(k, device=index.device)[None] < counts[:, None]
        if self.spatial_query_order:  # kept tokens first (valid stays a prefix), in token order
            key = torch.where(valid, index, index + padding_mask.shape[1])
            index = index.gather(1, key.argsort(1))
        return index, valid, counts

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, inputs: EncoderInputs) -> EncoderOutput:
        """Returns the full token map, its `selection` (`TokenSelection`: the score-network
        logits (N, S) as `scores` and, the same set in every layer, `kept_index` (N, K) and
        `kept_valid` (N, K) as `select` returns them; no object tokens) and, in `extras` in
        training with auxiliary heads, per auxiliary layer `aux_logits` (N, K, classes) and
        `aux_boxes` (N, K, 4) normalized cxcywh of the kept tokens, relative to
        `inputs.proposals` (N, S, 4), which training with auxiliary heads therefore requires
        (ValueError without)."""
        tokens, pos, padding_mask = inputs.tokens, inputs.pos, inputs.padding_mask
        n, s, _ = tokens.shape
        logits = self.score_tokens(inputs)
        index, valid, counts = self.select(logits, padding_mask)
        k = index.shape[1]
        query_pos = gather_tokens(pos, index)
        reference = gather_tokens(inputs.reference_points.reshape(n, s, -1), index).view(
            n, k, *inputs.reference_points.shape[2:]
        )
        aux = self.training and self.num_aux_layers > 0
        kept_proposals = None
        if aux:
            if inputs.proposals is None:
                raise ValueError(
                    "the auxiliary encoder loss regresses boxes from the transformer's two-stage "
                    "proposals: pass EncoderInputs.proposals (DINOTransformer does) or build the "
                    "encoder with aux_loss=False"
                )
            kept_proposals = gather_tokens(inputs.proposals, index)
        aux_logits: List[torch.Tensor] = []
        aux_boxes: List[torch.Tensor] = []
        memory = tokens
        query = gather_tokens(tokens, index)
        for layer_id, layer in enumerate(self.layers):
            query = layer(
                query,
                query_pos,
                reference,
                inputs.spatial_shapes,
                inputs.level_start_index,
                padding_mask,
                value=memory,
            )
            memory = scatter_tokens(memory, index, query, valid)
            if aux and layer_id < self.num_aux_layers:
                aux_logits.append(self.aux_class_heads[layer_id](query))
                aux_boxes.append((self.aux_box_heads[layer_id](query) + kept_proposals).sigmoid())
        selection = TokenSelection(
            scores=logits,
            kept_index=[index] * self.num_layers,
            kept_valid=[valid] * self.num_layers,
            padding_mask=padding_mask,
            spatial_shapes=inputs.spatial_shapes,
            level_start_index=inputs.level_start_index,
            strides=inputs.strides,
        )
        extras = dict(aux_logits=aux_logits, aux_boxes=aux_boxes) if aux else {}
        return EncoderOutput(memory=memory, selection=selection, extras=extras)

    # ---- supervision -------------------------------------------------------------------------
    def losses(
        self, outputs: Dict, targets: List[Dict[str, torch.Tensor]]
    ) -> Dict[str, torch.Tensor]:
        """Weighted encoder losses: the attention-map loss and, if enabled, the auxiliary
        encoder losses.

        Args:
            outputs: the meta-architecture's output dict: `encoder_output` (this encoder's),
                `sampling_locations` (layers, N, Q, heads, L, P, 2) and `attention_weights` of
                the decoder's cross attention, and `dn_meta` when denoising queries come first.
            targets: per image `labels` (n,), `boxes` (n, 4) normalized cxcywh.
        """
        if "sampling_locations" not in outputs or "attention_weights" not in outputs:
            raise KeyError(
                "SparseDetrEncoder.losses needs the decoder's `sampling_locations` "
                "and `attention_weights` in the outputs: run the transformer with "
                "return_sampling=True (DINO does so in training because this encoder "
                "sets needs_decoder_sampling)"
            )
        encoded = outputs["encoder_output"]
        selection, extras = encoded.selection, encoded.extras
        dn_meta = outputs.get("dn_meta")
        num_dn = dn_meta.num_queries if dn_meta is not None else 0
        padding_mask = selection.padding_mask
        dam_targets = self.attention_map_loss.targets(
            outputs["sampling_locations"][:, :, num_dn:],
            outputs["attention_weights"][:, :, num_dn:],
            selection.spatial_shapes,
            selection.level_start_index,
            padding_mask,
            selection.counts()[:, 0],
        )
        losses = self.attention_map_loss(selection.scores, dam_targets, padding_mask)
        if self.num_aux_layers and "aux_logits" in extras:
            losses.update(
                EncoderAuxiliaryLoss(self.aux_criterion)(
                    extras["aux_logits"], extras["aux_boxes"], selection.kept_valid[0], targets
                )
            )
        return losses

    def extra_repr(self) -> str:
        return (
            f"keep_ratio={self.keep_ratio}, num_layers={self.num_layers}, "
            f"num_aux_layers={self.num_aux_layers}, "
            f"attention_map_loss={self.attention_map_loss}"
        )
