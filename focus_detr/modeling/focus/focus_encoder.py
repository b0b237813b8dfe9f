"""`FocusEncoder`: Focus-DETR's encoder (foreground token selector + cascade of dual-attention
layers), implementing the transformer/encoder contract of `encoder_api`.

Layer l updates only the tokens its image keeps in that layer (the cascade: fewer each layer);
tokens never kept keep their input values. Padded tokens are never kept, attended to (their values
are masked in the deformable attention) or labelled foreground; with the selector's and the
loss's `padding="masked"` they are not scored into the selection or the loss either, with
`"published"` training does what the published code does (see `ForegroundTokenSelector`).
"""

import copy
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ...layers import MultiScaleDeformableAttention, init_deformable_transformer
from ...layers.ms_deform_attn import project_values
from ..transformer.encoder_api import EncoderInputs, EncoderOutput, TokenSelection
from .dual_attention_layer import DualAttentionEncoderLayer
from .foreground_loss import ForegroundLoss
from .foreground_token_selector import ForegroundTokenSelector
from .token_ops import gather_tokens, scatter_tokens

__all__ = ["FocusEncoder", "target_boxes_xyxy"]


def _write_prefix(ranked: torch.Tensor, query: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`ranked[:, :k]` <- `query` (N, k, C) at the `valid` (N, k) slots; in place when no gradient
    is recorded, else out of place."""
    k = query.shape[1]
    update = torch.where(valid[..., None], query, ranked[:, :k])
    if torch.is_grad_enabled():
        return torch.cat([update, ranked[:, k:]], 1)
    ranked[:, :k] = update
    return ranked


def target_boxes_xyxy(target: dict, image_size: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Absolute (x0, y0, x1, y1) pixel boxes of one image's target dict.

    Accepts `boxes_xyxy` (absolute pixels), or DETR's `boxes` (cx, cy, w, h normalised by the
    image's own size) with the size (h, w) in `image_size`, `size` or the `image_size` argument.
    """
    if "boxes_xyxy" in target:
        return target["boxes_xyxy"]
    if "boxes" not in target:
        raise KeyError("target needs 'boxes_xyxy' (absolute) or 'boxes' (normalised cxcywh)")
    size = target.get("image_size", target.get("size", image_size))
    if size is None:
        raise KeyError(
            "normalised 'boxes' need the image size: give 'image_size' (h, w) in the "
            "target or the image_sizes argument"
        )
    h, w = (float(v) for v in size)
    cx, cy, bw, bh = target["boxes"].unbind(-1)
    return torch.stack(
        [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], -1
    )


class FocusEncoder(nn.Module):
    """Args:
    selector: the foreground token selector (its `cascade_ratios` set the number of layers).
    layer: one `DualAttentionEncoderLayer`, deep-copied once per encoder layer.
    foreground_loss: supervision of the selector (`losses`); default `ForegroundLoss()`
        (published label assignment, focal loss, weight 1.5, name `select_loss`).
    spatial_query_order: run each layer's per-token part over the kept tokens in token-index
        (spatial) order instead of score order (`DualAttentionEncoderLayer`'s `query_order`):
        same result, local memory reads in the deformable attention. Default True.
    """

    selects_tokens = True

    def __init__(
        self,
        selector: Optional[ForegroundTokenSelector] = None,
        layer: Optional[DualAttentionEncoderLayer] = None,
        foreground_loss: Optional[ForegroundLoss] = None,
        spatial_query_order: bool = True,
    ):
        super().__init__()
        self.spatial_query_order = spatial_query_order
        self.selector = selector if selector is not None else ForegroundTokenSelector()
        layer = layer if layer is not None else DualAttentionEncoderLayer()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(self.selector.num_layers)])
        self.foreground_loss = foreground_loss if foreground_loss is not None else ForegroundLoss()
        self.embed_dim = layer.embed_dim
        self.num_layers = len(self.layers)
        self.init_weights()

    def init_weights(self):
        """The published initialisation: Xavier-uniform matrices (attention, FFN, score network),
        then Deformable-DETR's init of the deformable attention; modulation coefficients keep
        their uniform init."""
        init_deformable_transformer(self)

    def forward(self, inputs: EncoderInputs) -> EncoderOutput:
        """Returns the full token map, its `selection` (`TokenSelection`: the foreground logits
        (N, S) as `scores`; per layer `kept_index` (N, K_l) token indices in selector order
        with `kept_valid` (N, K_l), the slots written back, and `object_index` (N, k_l) token
        indices with `object_valid`) and, in `extras`, the selector's decision
        `foreground_selection` (`ForegroundSelection`) and per layer `object_scores`.
        """
        tokens, pos, padding_mask = inputs.tokens, inputs.pos, inputs.padding_mask
        features = tokens + pos
        if inputs.proposal_projection is not None:
            features = inputs.proposal_projection(features)
        selection = self.selector(
            features, padding_mask, inputs.spatial_shapes, inputs.level_start_index
        )
        n, s, _ = tokens.shape
        # Every layer keeps a prefix of the same ranking, so the layers work on the ranked tokens
        # (gathered once) and the result is scattered into the full map once; this equals
        # gathering from and scattering into the full map in every layer.
        ranking = selection.ranking
        ranked = gather_tokens(tokens, ranking)
        ranked_pos = gather_tokens(pos, ranking)
        ranked_reference = gather_tokens(inputs.reference_points.reshape(n, s, -1), ranking).view(
            n, ranking.shape[1], *inputs.reference_points.shape[2:]
        )
        ranked_logits = gather_tokens(selection.object_logits, ranking)
        values = self._projected_values(tokens, padding_mask)
        record = TokenSelection(
            scores=selection.logits,
            kept_index=[],
            kept_valid=[],
            padding_mask=padding_mask,
            spatial_shapes=inputs.spatial_shapes,
            level_start_index=inputs.level_start_index,
            strides=inputs.strides,
        )
        extras: Dict[str, object] = dict(foreground_selection=selection, object_scores=[])
        for layer_id, layer in enumerate(self.layers):
            index, valid = selection.kept(layer_id)
            k = index.shape[1]
            query, info = layer(
                ranked[:, :k],
                ranked_pos[:, :k],
                ranked_reference[:, :k],
                ranked_logits[:, :k],
                valid,
                value=tokens,
                value_padding_mask=padding_mask,
                spatial_shapes=inputs.spatial_shapes,
                level_start_index=inputs.level_start_index,
                class_head=inputs.class_head,
                projected_value=values[layer_id] if values is not None else None,
                query_order=index.argsort(1) if self.spatial_query_order else None,
            )
            # published padding: every image processed the batch's count, keeps its own prefix
            written = selection.written(layer_id)
            ranked = _write_prefix(ranked, query, written)
            record.kept_index.append(index)
            record.kept_valid.append(written)
            if "object_index" in info:
                record.object_index.append(torch.gather(index, 1, info["object_index"]))
                record.object_valid.append(info["object_valid"])
                extras["object_scores"].append(info["object_scores"])
        ever_kept = torch.arange(ranking.shape[1], device=ranking.device)[None] < (
            selection.write_counts.max(1).values[:, None]
            if selection.write_counts.numel()
            else ranking.new_zeros(n, 1)
        )
        memory = scatter_tokens(tokens, ranking, ranked, ever_kept)
        return EncoderOutput(memory=memory, selection=record, extras=extras)

    def _projected_values(
        self, tokens: torch.Tensor, padding_mask: torch.Tensor
    ) -> Optional[List[torch.Tensor]]:
        """Every layer's deformable-attention values (the same original tokens, each layer's own
        projection) up front; None when a layer's cross attention is not a
        `MultiScaleDeformableAttention` (it then projects its values itself)."""
        attentions = [layer.cross_attention for layer in self.layers]
        if not all(isinstance(a, MultiScaleDeformableAttention) for a in attentions):
            return None
        return project_values(attentions, tokens, padding_mask)

    def losses(
        self, outputs, targets: List[dict], image_sizes: Optional[List[Sequence[int]]] = None
    ) -> Dict[str, torch.Tensor]:
        """Foreground loss of the selector, already weighted: {"select_loss": ...}.

        Args:
            outputs: this encoder's `EncoderOutput` for the batch, or the model's output dict
                holding it under "encoder_output" (the meta-architecture's call).
            targets: one dict per image: `boxes_xyxy` (absolute input pixels), or `boxes`
                (normalised cxcywh) with `image_size` (h, w) (or pass `image_sizes`).
        """
        output = outputs["encoder_output"] if isinstance(outputs, dict) else outputs
        selection = output.selection
        strides = selection.strides
        assigner = self.foreground_loss.assigner
        if strides is not None and tuple(int(s) for s in strides) != assigner.strides:
            raise ValueError(
                f"label assignment strides {assigner.strides} differ from the "
                f"feature strides {tuple(strides)}"
            )
        sizes = image_sizes if image_sizes is not None else [None] * len(targets)
        boxes = [target_boxes_xyxy(t, size) for t, size in zip(targets, sizes)]
        return self.foreground_loss(
            selection.scores, boxes, selection.spatial_shapes, selection.padding_mask
        )
