"""`focus_detr.integrations.detrex`: our Focus encoder as detrex DINO's encoder, tested in a
stand-in that calls it exactly as detrex's DINOTransformer does (tests/detrex_standin.py)."""

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate

from detrex_standin import StandInDecoder, StandInDINO, StandInTransformer
from dino_utils import make_batch
from focus_detr.integrations.detrex import DetrexEncoderAdapter, build_detrex_model, use_encoder
from focus_detr.modeling import DeformableEncoder, DeformableEncoderLayer, EncoderInputs
from focus_detr.modeling.encoders import focus_encoder_config
from focus_detr.modeling.transformer.multiscale import (
    encoder_reference_points,
    flatten_levels,
    token_proposals,
    valid_sizes,
)

DIM, SIZES = 32, [(128, 160), (96, 128)]  # image 1 padded


def standin_cfg():
    """A detrex-style DINO LazyConfig (the stand-in's), with a dense encoder to be replaced."""
    dense = L(DeformableEncoder)(
        layer=L(DeformableEncoderLayer)(
            embed_dim=DIM, num_heads=4, num_levels=4, num_points=2, feedforward_dim=64
        ),
        num_layers=2,
    )
    return L(StandInDINO)(
        transformer=L(StandInTransformer)(encoder=dense, decoder=L(StandInDecoder)(num_layers=2)),
        num_classes=5,
        embed_dim=DIM,
    )


def focus_cfg():
    return focus_encoder_config(
        embed_dim=DIM,
        num_heads=4,
        feedforward_dim=64,
        num_levels=4,
        num_points=2,
        keep_ratio=0.3,
        cascade_ratios=(1.0, 0.5),
        num_object_tokens=20,
        padding="published",
    )


@pytest.fixture
def model():
    torch.manual_seed(0)
    return instantiate(use_encoder(standin_cfg(), focus_cfg()))


def our_inputs(model, feats, masks, pos):
    """The same features as our DINOTransformer hands them to an encoder."""
    transformer = model.transformer
    tokens, pos, padding, shapes, start = flatten_levels(
        feats, masks, pos, transformer.level_embeds
    )
    sizes = valid_sizes(masks)
    ratios = sizes / shapes.flip(-1).to(sizes)[None]
    proposals, invalid = token_proposals(shapes, sizes, padding)
    return EncoderInputs(
        tokens=tokens,
        pos=pos,
        padding_mask=padding,
        spatial_shapes=shapes,
        level_start_index=start,
        valid_ratios=ratios,
        reference_points=encoder_reference_points(shapes, ratios),
        proposal_projection=lambda x: transformer.enc_output_norm(
            transformer.enc_output(x.masked_fill(invalid[..., None], 0.0))
        ),
        class_head=transformer.decoder.class_embed[2],
        strides=[8, 16, 32, 64],
        proposals=proposals,
        invalid_proposals=invalid,
    )


def test_training_adds_select_loss_and_trains_the_selector_through_detrex_projection(model):
    batch = make_batch(SIZES, [3, 2])
    losses = model.train()(batch)
    assert set(losses) == {"loss_class", "select_loss"}
    sum(losses.values()).backward()
    encoder = model.transformer.encoder.encoder
    assert encoder.selector.score_network.layer1[1].weight.grad.abs().sum() > 0
    assert model.transformer.enc_output.weight.grad.abs().sum() > 0  # the shared projection


@pytest.mark.parametrize("training", [False, True])
def test_adapter_hands_the_encoder_what_our_transformer_would(model, training):
    captured = {}
    model.transformer.register_forward_pre_hook(lambda m, args: captured.setdefault("in", args))
    batch = make_batch(SIZES, [3, 2])
    model.train(training)
    with torch.no_grad():
        out = model(batch)
    adapter = model.transformer.encoder
    ours = adapter.encoder(our_inputs(model, *captured["in"]))
    assert torch.allclose(adapter.last_output.memory, ours.memory, atol=1e-5)
    if training:
        targets = [{"boxes_xyxy": x["instances"].gt_boxes.tensor} for x in batch]
        expected = adapter.encoder.losses(ours, targets)["select_loss"]
        assert torch.allclose(out["select_loss"], expected, rtol=1e-5)
    else:
        assert torch.equal(out, adapter.last_output.memory)  # inference: the memory, no loss


def test_build_restores_the_encoders_own_initialisation():
    torch.manual_seed(0)
    built = instantiate(use_encoder(standin_cfg(), focus_cfg()))
    offsets = built.transformer.encoder.encoder.layers[0].cross_attention.sampling_offsets
    assert torch.count_nonzero(offsets.weight) == 0  # Deformable-DETR's init, not detrex's xavier
    cfg = use_encoder(standin_cfg(), focus_cfg())
    cfg._target_ = cfg.pop("detrex_target")  # the same model without build_detrex_model
    plain = instantiate(cfg)
    assert (
        torch.count_nonzero(
            plain.transformer.encoder.encoder.layers[0].cross_attention.sampling_offsets.weight
        )
        > 0
    )
    with pytest.raises(RuntimeError, match="build_detrex_model"):
        plain.eval()(make_batch(SIZES, [1, 1]))


def test_use_encoder_keeps_the_config_layout_and_names_a_missing_adapter():
    cfg = use_encoder(standin_cfg(), focus_cfg())
    assert cfg.transformer.encoder._target_ is DetrexEncoderAdapter
    assert cfg.transformer.encoder.encoder.selector.padding == "published"
    assert use_encoder(cfg, focus_cfg())._target_ is build_detrex_model  # idempotent
    with pytest.raises(ValueError, match="no DetrexEncoderAdapter"):
        build_detrex_model(torch.nn.Linear, in_features=2, out_features=2)


def sparse_cfg(aux_loss=False):
    from focus_detr.modeling.focus import TokenScoreNetwork
    from focus_detr.modeling.sparse import AttentionMapLoss, SparseDetrEncoder

    return L(SparseDetrEncoder)(
        layer=L(DeformableEncoderLayer)(
            embed_dim=DIM, num_heads=4, num_levels=4, num_points=2, feedforward_dim=64
        ),
        num_layers=2,
        keep_ratio=0.3,
        score_network=L(TokenScoreNetwork)(in_dim=DIM, hidden_dim=DIM),
        attention_map_loss=L(AttentionMapLoss)(weight=1.0, name="loss_mask_prediction"),
        num_classes=5,
        aux_loss=aux_loss,
    )


def test_sparse_encoder_trains_on_the_decoders_recorded_sampling():
    torch.manual_seed(0)
    model = instantiate(use_encoder(standin_cfg(), sparse_cfg())).train()
    calls = []
    for attention in model.transformer.decoder.cross_attentions:  # what each attention computes
        attention.register_forward_pre_hook(
            lambda m, args, kwargs: calls.append(
                m.forward(*args, **kwargs, return_sampling=True)[1:]
            ),
            with_kwargs=True,
        )
    losses = model(make_batch(SIZES, [3, 2]))
    assert set(losses) == {"loss_class", "loss_mask_prediction"}
    adapter = model.transformer.encoder
    recorded = adapter.decoder_sampling
    assert len(recorded) == 2 == len(calls)
    for (locations, weights), (their_locations, their_weights) in zip(recorded, calls):
        assert torch.allclose(locations, their_locations, atol=1e-6)
        assert torch.allclose(weights, their_weights, atol=1e-6)
    # the attention-map target comes from the matching queries only (dn queries first)
    locations, weights = (torch.stack(t) for t in zip(*recorded))
    selection = adapter.last_output.selection
    num_dn = model.transformer.num_dn_queries
    targets = adapter.encoder.attention_map_loss.targets(
        locations[:, :, num_dn:],
        weights[:, :, num_dn:],
        selection.spatial_shapes,
        selection.level_start_index,
        selection.padding_mask,
        selection.counts()[:, 0],
    )
    expected = adapter.encoder.attention_map_loss(selection.scores, targets, selection.padding_mask)
    assert torch.allclose(losses["loss_mask_prediction"], expected["loss_mask_prediction"])
    sum(losses.values()).backward()
    assert adapter.encoder.score_network.layer1[1].weight.grad.abs().sum() > 0


def test_sparse_auxiliary_losses_read_detrex_style_targets():
    torch.manual_seed(0)
    model = instantiate(use_encoder(standin_cfg(), sparse_cfg(aux_loss=True))).train()
    losses = model(make_batch(SIZES, [3, 2]))
    assert {"loss_class_enc_0", "loss_bbox_enc_0", "loss_giou_enc_0"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
