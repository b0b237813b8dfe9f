"""Swappable transformer encoders: dense (DINO), Sparse DETR and Focus-DETR as interchangeable
parts of one DINO transformer, chosen by ONE config value.

In a LazyConfig, `swappable_encoder(dense)` turns the dense encoder's config into

    model.transformer.encoder = L(build_encoder)(
        name="dense", keep_ratio=0.3,
        choices=dict(dense=..., sparse=L(SparseDetrEncoder)(...), focus=L(FocusEncoder)(...)))

so that on the command line

    tools/train_net.py --config-file <config> model.transformer.encoder.name=sparse
    tools/train_net.py --config-file <config> model.transformer.encoder.name=focus \
        model.transformer.encoder.keep_ratio=0.2

swaps the encoder (and its losses, which the meta-architecture collects from the encoder) while
every other module keeps its name and weights. Only the chosen encoder is built: detectron2's
`instantiate` does not descend into `choices` (a plain mapping), `build_encoder` instantiates the
chosen entry. Shared knobs: `keep_ratio` (rho of Sparse DETR, alpha of Focus-DETR: the paper's
Table 6 axis) and `num_layers` (dense and sparse read it; the Focus cascade must have as many
entries); every choice takes its layer dimensions from the dense layer config
(`${..dense.layer}`). Override a choice's own settings under
`model.transformer.encoder.choices.<name>.*` (e.g. `...choices.dense.layer.num_points=2`).
"""

import copy
from typing import Any, Mapping, Optional, Sequence

from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from torch import nn

from .focus import (
    PUBLISHED_CASCADE_RATIOS,
    PUBLISHED_SCALE_RANGES,
    DualAttentionEncoderLayer,
    FocusEncoder,
    ForegroundLabelAssigner,
    ForegroundLoss,
    ForegroundTokenSelector,
    TokenScoreNetwork,
)
from .sparse import AttentionMapLoss, SparseDetrEncoder
from .transformer.multiscale import FOUR_SCALE_STRIDES

__all__ = ["ENCODER_NAMES", "build_encoder", "focus_encoder_config", "swappable_encoder"]

ENCODER_NAMES = ("dense", "sparse", "focus")


def build_encoder(
    name: str,
    choices: Mapping[str, Any],
    keep_ratio: Optional[float] = None,
    num_layers: Optional[int] = None,
) -> nn.Module:
    """Build the encoder `choices[name]`.

    Args:
        name: which choice to build.
        choices: name -> LazyCall config (or an already built module).
        keep_ratio: the keep ratio the sparse choices read through interpolation (one knob for
            all of them); not used here.
        num_layers: if given, the built encoder must have this many layers (choices compared
            at equal depth; e.g. a Focus cascade needs one ratio per layer).
    """
    if name not in choices:
        raise ValueError(
            f"unknown encoder {name!r}; the config offers {sorted(choices)} "
            "(set model.transformer.encoder.name)"
        )
    choice = choices[name]
    encoder = choice if isinstance(choice, nn.Module) else instantiate(choice)
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder choice {name!r} built a {type(encoder).__name__}, not a module")
    depth = getattr(encoder, "num_layers", None)
    if num_layers is not None and depth is not None and depth != num_layers:
        raise ValueError(
            f"encoder choice {name!r} has {depth} layers but the config asks for "
            f"{num_layers} (model.transformer.encoder.num_layers); e.g. give the "
            "Focus cascade_ratios one entry per layer"
        )
    return encoder


def swappable_encoder(
    dense,
    name: str = "dense",
    keep_ratio: float = 0.3,
    num_classes: Any = "${model.num_classes}",
    criterion: Any = "${model.criterion}",
    cascade_ratios: Sequence[float] = PUBLISHED_CASCADE_RATIOS,
    num_object_tokens: int = 300,
    strides: Sequence[int] = FOUR_SCALE_STRIDES,
    range_scale: Any = 1.0,
):
    """LazyCall config of `build_encoder` offering the three encoders.

    Args:
        dense: LazyCall config of the dense `DeformableEncoder` (copied; its `layer` config
            supplies embed_dim, num_heads, num_levels, num_points, feedforward_dim and
            attn_dropout of every choice; its `num_layers` becomes the shared
            `model.transformer.encoder.num_layers`).
        name: the default choice ("dense", "sparse" or "focus").
        keep_ratio: the shared keep ratio. Default 0.3 (paper, Table 1).
        num_classes: classes of the Sparse DETR auxiliary heads. Default `${model.num_classes}`.
        criterion: matcher/weights of the Sparse DETR auxiliary loss. Default the model's.
        cascade_ratios: Focus cascade (one entry per encoder layer). Default the published six.
        num_object_tokens: Focus object tokens per layer. Default 300.
        strides: feature strides of the Focus label assignment. Default (8, 16, 32, 64).
        range_scale: factor on the Focus label assignment's scale ranges. Default 1 (published).
    """
    if name not in ENCODER_NAMES:
        raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODER_NAMES}")
    # interpolation depth: "${..x}" from a key of choices.<name> is choices.x
    sparse = L(SparseDetrEncoder)(
        layer="${..dense.layer}",
        num_layers="${...num_layers}",
        keep_ratio="${...keep_ratio}",
        score_network=L(TokenScoreNetwork)(
            in_dim="${...dense.layer.embed_dim}", hidden_dim="${...dense.layer.embed_dim}"
        ),
        attention_map_loss=L(AttentionMapLoss)(weight=1.0, name="loss_mask_prediction"),
        num_classes=num_classes,
        aux_loss=True,
        aux_criterion=criterion,
    )
    layer = "${...dense.layer."  # from a key of choices.focus.layer
    focus = focus_encoder_config(
        embed_dim=layer + "embed_dim}",
        num_heads=layer + "num_heads}",
        feedforward_dim=layer + "feedforward_dim}",
        dropout=layer + "attn_dropout}",
        num_levels=layer + "num_levels}",
        num_points=layer + "num_points}",
        keep_ratio="${....keep_ratio}",  # from choices.focus.selector
        cascade_ratios=cascade_ratios,
        num_object_tokens=num_object_tokens,
        strides=strides,
        padding="${.....padding}",  # from choices.focus.selector: model.transformer.padding
        range_scale=range_scale,
    )
    # the depth is one knob too: the dense and sparse choices read it, Focus's is checked
    dense = copy.deepcopy(dense)
    num_layers = dense.num_layers
    dense.num_layers = "${...num_layers}"
    return L(build_encoder)(
        name=name,
        keep_ratio=keep_ratio,
        num_layers=num_layers,
        choices=dict(dense=dense, sparse=sparse, focus=focus),
    )


def focus_encoder_config(
    *,
    embed_dim: Any = 256,
    num_heads: Any = 8,
    feedforward_dim: Any = 2048,
    dropout: Any = 0.0,
    num_levels: Any = 4,
    num_points: Any = 4,
    keep_ratio: Any = 0.3,
    cascade_ratios: Sequence[float] = PUBLISHED_CASCADE_RATIOS,
    num_object_tokens: int = 300,
    strides: Sequence[int] = FOUR_SCALE_STRIDES,
    padding: Any = "${...padding}",
    range_scale: Any = 1.0,
):
    """LazyCall config of a `FocusEncoder` with the published method settings spelled out: top-down
    modulation of the score network's features with coefficients drawn in [-0.3, 0.3], object
    score = product of raw logits, the published label-assignment ranges, focal `select_loss` of
    weight 1.5. One tree for the Focus-DETR configs and the swappable encoder's `focus` choice;
    override its parts as usual (e.g. `model.transformer.encoder.selector.modulation_target=
    logits`).

    Args (defaults: the published Focus-DETR-R50; any may be an interpolation string):
        embed_dim, num_heads, feedforward_dim, dropout, num_levels, num_points: the
            dual-attention layer's sizes; the score network and the selector read embed_dim and
            num_levels from the layer (`${...layer.embed_dim}`), so they are set in one place.
        keep_ratio: the paper's alpha. Default 0.3.
        cascade_ratios: per-layer keep ratios (one per encoder layer). Default the published six.
        num_object_tokens: top-k object tokens of the self-attention. Default 300.
        strides: feature strides of the label assignment. Default (8, 16, 32, 64).
        padding: the selector's and the foreground loss's `padding` mode. Default
            `${...padding}`: from their keys, the DINO transformer's `padding` (the config's one
            key, `model.transformer.padding`, when this encoder is `model.transformer.encoder`).
        range_scale: factor on the label assignment's scale ranges (`ForegroundLabelAssigner`).
            Default 1: the published ranges, set for 800-px images.
    """
    return L(FocusEncoder)(
        selector=L(ForegroundTokenSelector)(
            # "${...layer.x}" from a key of selector.score_network is this encoder's layer.x
            score_network=L(TokenScoreNetwork)(
                in_dim="${...layer.embed_dim}", hidden_dim="${...layer.embed_dim}"
            ),
            num_levels="${..layer.num_levels}",
            modulation="top_down",
            modulation_target="features",  # "logits": coarse scores reach the finer levels
            coefficient_init_range=0.3,
            keep_ratio=keep_ratio,
            cascade_ratios=tuple(cascade_ratios),
            padding=padding,
        ),
        layer=L(DualAttentionEncoderLayer)(
            embed_dim=embed_dim,
            num_heads=num_heads,
            feedforward_dim=feedforward_dim,
            dropout=dropout,
            num_levels=num_levels,
            num_points=num_points,
            num_object_tokens=num_object_tokens,
            object_score="logit_product",
        ),
        foreground_loss=L(ForegroundLoss)(
            assigner=L(ForegroundLabelAssigner)(
                strides=tuple(strides),
                scale_ranges=PUBLISHED_SCALE_RANGES,
                size_measure="max_side_distance",
                range_scale=range_scale,
            ),
            weight=1.5,
            alpha=0.25,
            gamma=2.0,
            name="select_loss",
            padding=padding,
        ),
    )
