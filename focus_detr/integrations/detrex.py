"""Run this project's encoders (Focus, Sparse DETR, dense) inside detrex's DINO.

detrex's `DINOTransformer` calls its encoder with keywords (`query`, `key`, `value`, `query_pos`,
`query_key_padding_mask`, `spatial_shapes`, `reference_points`, `level_start_index`,
`valid_ratios`, ...) and takes the returned memory; our encoders take one `EncoderInputs`. In a
detrex LazyConfig of DINO (detrex on the Python path):

    from focus_detr.integrations.detrex import use_encoder
    from focus_detr.modeling.encoders import focus_encoder_config

    use_encoder(model, focus_encoder_config(padding="published"))

replaces `model.transformer.encoder` with a `DetrexEncoderAdapter` around our encoder and builds
the model through `build_detrex_model`, which binds the adapter to detrex's transformer (its
two-stage projection `enc_output` + `enc_output_norm` feeds the Focus score network, its extra
class head `decoder.class_embed[num_layers]` is the Focus multi-category scorer), restores the
encoder's own initialisation (detrex's transformer re-initialises every matrix it holds) and adds
the encoder's losses (Focus: `select_loss`, already weighted) to the loss dict detrex's DINO
returns in training. detrex's own `tools/train_net.py` then trains it. For Sparse DETR, whose
attention-map loss needs the decoder's deformable sampling, the model also records where each of
detrex's decoder cross attentions samples (from the inputs detrex hands them: the same offsets,
weights and reference boxes as the attention computes).
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import LazyCall as L
from torch import nn

from ..layers import box_xyxy_to_cxcywh
from ..layers.graph_capture import level_shapes, level_starts
from ..layers.ms_deform_attn import MultiScaleDeformableAttention
from ..modeling.focus.token_ops import level_valid_sizes
from ..modeling.transformer.decoder import deformable_sampling
from ..modeling.transformer.encoder_api import EncoderInputs, EncoderOutput
from ..modeling.transformer.multiscale import FOUR_SCALE_STRIDES, token_proposals

__all__ = ["DetrexEncoderAdapter", "build_detrex_model", "use_encoder"]

# detrex's `gen_encoder_output_proposals`: proposal size at the finest level and valid range
DETREX_PROPOSAL_BASE_SIZE = 0.05
DETREX_PROPOSAL_VALID_RANGE = (0.01, 0.99)


class DetrexEncoderAdapter(nn.Module):
    """detrex's encoder call -> our encoder contract -> detrex's memory.

    Args:
        encoder: one of our encoders (`FocusEncoder`, `SparseDetrEncoder`, `DeformableEncoder`).
        strides: input stride of each feature level (Focus's label assignment). Default
            `FOUR_SCALE_STRIDES`, detrex DINO's 4 scales.
        proposal_base_size, proposal_valid_range: detrex's two-stage proposal settings (the
            tokens its projection zeroes); defaults detrex's 0.05 and (0.01, 0.99).
    """

    def __init__(
        self,
        encoder: nn.Module,
        strides: Sequence[int] = FOUR_SCALE_STRIDES,
        proposal_base_size: float = DETREX_PROPOSAL_BASE_SIZE,
        proposal_valid_range: Tuple[float, float] = DETREX_PROPOSAL_VALID_RANGE,
    ):
        super().__init__()
        self.encoder = encoder
        self.embed_dim = encoder.embed_dim  # detrex's DINOTransformer reads it
        self.strides = tuple(int(s) for s in strides)
        self.proposal_base_size = proposal_base_size
        self.proposal_valid_range = tuple(proposal_valid_range)
        # not submodules: the transformer holds this adapter, and the batch's targets
        self.__dict__["_transformer"] = None
        self.last_output: Optional[EncoderOutput] = None
        self.targets: Optional[List[dict]] = None
        # decoder cross attentions' (locations, weights) of the last forward, per layer
        self.decoder_sampling: List[Tuple[torch.Tensor, torch.Tensor]] = []

    def bind(self, transformer: nn.Module) -> None:
        """Use `transformer`'s (detrex's DINOTransformer) projection and class head."""
        self.__dict__["_transformer"] = transformer

    def forward(
        self,
        query: torch.Tensor,
        key=None,
        value=None,
        query_pos=None,
        query_key_padding_mask=None,
        spatial_shapes=None,
        reference_points=None,
        level_start_index=None,
        valid_ratios=None,
        **kwargs,
    ) -> torch.Tensor:
        """detrex's encoder signature. Shapes as detrex passes them: query, query_pos (N, S, C);
        query_key_padding_mask (N, S) bool; spatial_shapes (L, 2); reference_points
        (N, S, L, 2); level_start_index (L,); valid_ratios (N, L, 2). Returns memory (N, S, C)."""
        transformer = self._transformer
        if transformer is None:
            raise RuntimeError(
                "DetrexEncoderAdapter is not bound to a detrex transformer: build "
                "the model with focus_detr.integrations.detrex.build_detrex_model "
                "(use_encoder(model_cfg, encoder_cfg) sets it in a LazyConfig)"
            )
        n, s, _ = query.shape
        padding = (
            query_key_padding_mask
            if query_key_padding_mask is not None
            else query.new_zeros(n, s, dtype=torch.bool)
        )
        shapes = level_shapes(spatial_shapes)
        sizes = (
            level_valid_sizes(padding, shapes, level_starts(spatial_shapes, level_start_index))
            .flip(-1)
            .float()
        )
        proposals, invalid = token_proposals(
            spatial_shapes, sizes, padding, self.proposal_base_size, self.proposal_valid_range
        )
        decoder = transformer.decoder

        def project(x: torch.Tensor) -> torch.Tensor:
            return transformer.enc_output_norm(
                transformer.enc_output(x.masked_fill(invalid[..., None], 0.0))
            )

        inputs = EncoderInputs(
            tokens=query,
            pos=query_pos,
            padding_mask=padding,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
            reference_points=reference_points,
            proposal_projection=project,
            class_head=decoder.class_embed[decoder.num_layers],
            strides=list(self.strides),
            proposals=proposals,
            invalid_proposals=invalid,
        )
        self.decoder_sampling = []
        self.last_output = self.encoder(inputs)
        return self.last_output.memory

    @property
    def needs_decoder_sampling(self) -> bool:
        return bool(getattr(self.encoder, "needs_decoder_sampling", False))

    def losses(self) -> Dict[str, torch.Tensor]:
        """The encoder's (already weighted) losses for the last forward's batch."""
        if not hasattr(self.encoder, "losses") or self.last_output is None:
            return {}
        outputs = {"encoder_output": self.last_output}
        if self.needs_decoder_sampling:
            if not self.decoder_sampling:
                raise RuntimeError(
                    f"{type(self.encoder).__name__}'s loss needs the decoder's deformable "
                    "sampling, but no decoder cross attention ran (build the model with "
                    "build_detrex_model; the decoder needs modules with sampling_offsets and "
                    "attention_weights)"
                )
            locations, weights = (torch.stack(t) for t in zip(*self.decoder_sampling))
            outputs.update(
                sampling_locations=locations,
                attention_weights=weights,
                dn_meta=_QueryCount(locations.shape[2] - self._matching_queries()),
            )
        return self.encoder.losses(outputs, self.targets)

    def _matching_queries(self) -> int:
        # detrex puts the denoising queries first, then its two-stage proposals
        return int(self._transformer.two_stage_num_proposals)

    def record_decoder_sampling(
        self,
        attention: nn.Module,
        query: torch.Tensor,
        query_pos: Optional[torch.Tensor],
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
    ) -> None:
        """Record where `attention` (a detrex MultiScaleDeformableAttention, batch-first)
        samples for this call's inputs."""
        q = query if query_pos is None else query + query_pos
        locations, weights = deformable_sampling(
            _AsOurs(attention), q, reference_points, spatial_shapes
        )
        self.decoder_sampling.append((locations, weights))


class _QueryCount:
    """The one field of our denoising record the Sparse loss reads (queries before the matching
    ones)."""

    def __init__(self, num_queries: int):
        self.num_queries = num_queries


class _AsOurs:
    """A detrex deformable attention seen through our `sampling_locations` (same submodule
    names: `sampling_offsets`, `attention_weights`; same num_heads / num_levels / num_points)."""

    def __init__(self, attention: nn.Module):
        self._attention = attention

    def __getattr__(self, name):
        return getattr(self._attention, name)

    def sampling_locations(self, query, reference_points, spatial_shapes):
        return MultiScaleDeformableAttention.sampling_locations(
            self._attention, query, reference_points, spatial_shapes
        )


def _targets(batched_inputs) -> Optional[List[dict]]:
    """Per image `boxes_xyxy` (input pixels), `labels`, `image_size`; None without instances."""
    if not all(isinstance(x, dict) and "instances" in x for x in batched_inputs):
        return None
    targets = []
    for x in batched_inputs:
        inst = x["instances"]
        h, w = inst.image_size
        boxes = inst.gt_boxes.tensor
        scale = boxes.new_tensor([w, h, w, h])
        targets.append(
            {
                "boxes_xyxy": boxes,
                "labels": inst.gt_classes,
                "image_size": (h, w),
                "boxes": box_xyxy_to_cxcywh(boxes / scale),
            }
        )
    return targets


def _record_sampling_hooks(transformer: nn.Module, adapter: DetrexEncoderAdapter) -> int:
    """Pre-hooks on `transformer.decoder`'s deformable attentions recording their sampling into
    `adapter` in training; returns how many were hooked."""
    attentions = [
        m
        for m in transformer.decoder.modules()
        if hasattr(m, "sampling_offsets") and hasattr(m, "attention_weights")
    ]

    def record(module, args, kwargs):
        if module.training:
            query = args[0] if args else kwargs["query"]
            adapter.record_decoder_sampling(
                module,
                query,
                kwargs.get("query_pos"),
                kwargs["reference_points"],
                kwargs["spatial_shapes"],
            )

    for attention in attentions:
        if not getattr(attention, "batch_first", True):
            raise ValueError(
                "the decoder's deformable attention must be batch_first (detrex "
                "DINO's is) for the Sparse DETR loss"
            )
        attention.register_forward_pre_hook(record, with_kwargs=True)
    return len(attentions)


def build_detrex_model(detrex_target, **kwargs) -> nn.Module:
    """`detrex_target(**kwargs)` (detrex's DINO) with its `DetrexEncoderAdapter` bound to its
    transformer, the encoder's initialisation restored and the encoder's losses added to the
    training loss dict."""
    model = detrex_target(**kwargs)
    adapters = []
    for module in model.modules():
        adapter = getattr(module, "encoder", None)
        if isinstance(adapter, DetrexEncoderAdapter) and module is not adapter:
            adapter.bind(module)
            adapters.append(adapter)
    if not adapters:
        raise ValueError(
            f"{type(model).__name__} holds no DetrexEncoderAdapter as a "
            "transformer's `encoder`; set model.transformer.encoder with use_encoder"
        )
    for adapter in adapters:
        if hasattr(adapter.encoder, "init_weights"):
            adapter.encoder.init_weights()
        if adapter.needs_decoder_sampling and not _record_sampling_hooks(
            adapter._transformer, adapter
        ):
            raise ValueError(
                f"{type(adapter.encoder).__name__} needs the decoder's deformable "
                "sampling, but the decoder has no deformable attention"
            )

    def remember_targets(module, args, kwargs):
        batched = args[0] if args else kwargs.get("batched_inputs")
        for adapter in adapters:
            adapter.targets = _targets(batched) if module.training else None

    def add_encoder_losses(module, args, kwargs, output):
        if module.training and isinstance(output, dict):
            for adapter in adapters:
                if adapter.targets is not None:
                    output.update(adapter.losses())
        return output

    model.register_forward_pre_hook(remember_targets, with_kwargs=True)
    model.register_forward_hook(add_encoder_losses, with_kwargs=True)
    return model


def use_encoder(model_cfg, encoder_cfg, **adapter_kwargs):
    """Edit a detrex DINO LazyConfig (`model`) in place so that `encoder_cfg` (a LazyCall of one
    of our encoders) is its encoder; `adapter_kwargs` go to `DetrexEncoderAdapter`. The config
    tree keeps detrex's layout (`model.transformer.encoder.encoder.*` is our encoder's), so the
    usual overrides work. Returns `model_cfg`."""
    model_cfg.transformer.encoder = L(DetrexEncoderAdapter)(encoder=encoder_cfg, **adapter_kwargs)
    if model_cfg._target_ is not build_detrex_model:
        model_cfg.detrex_target = model_cfg._target_
        model_cfg._target_ = build_detrex_model
    return model_cfg
