"""Dual-attention encoder layer and Focus encoder (Algorithm 1): a per-image float64 reference,
padding, keep/object sets, batch invariance, gather/scatter."""

import math

import pytest
import torch
from torch import nn

from focus_detr.modeling.focus import (
    DualAttentionEncoderLayer,
    FocusEncoder,
    ForegroundTokenSelector,
    TokenScoreNetwork,
    gather_tokens,
    object_token_scores,
    scatter_tokens,
)
from focus_detr.evaluation import kept_foreground_recall

from focus_utils import Projection, Scene, attach_projection


DIM, CLASSES = 32, 7
SIZES = [(64, 96), (48, 80), (8, 8), (40, 40)]  # 128, 81, 4 and 39 tokens

# detrex names and shapes of one published encoder layer (reference state-dict list)
PUBLISHED_LAYER_KEYS = {
    "attentions.0.attn.in_proj_weight": (768, 256),
    "attentions.0.attn.in_proj_bias": (768,),
    "attentions.0.attn.out_proj.weight": (256, 256),
    "attentions.0.attn.out_proj.bias": (256,),
    "attentions.1.sampling_offsets.weight": (256, 256),
    "attentions.1.sampling_offsets.bias": (256,),
    "attentions.1.attention_weights.weight": (128, 256),
    "attentions.1.attention_weights.bias": (128,),
    "attentions.1.value_proj.weight": (256, 256),
    "attentions.1.value_proj.bias": (256,),
    "attentions.1.output_proj.weight": (256, 256),
    "attentions.1.output_proj.bias": (256,),
    "ffns.0.layers.0.0.weight": (2048, 256),
    "ffns.0.layers.0.0.bias": (2048,),
    "ffns.0.layers.1.weight": (256, 2048),
    "ffns.0.layers.1.bias": (256,),
    "norms.0.weight": (256,),
    "norms.0.bias": (256,),
    "norms.1.weight": (256,),
    "norms.1.bias": (256,),
    "norm2.weight": (256,),
    "norm2.bias": (256,),
}


def build(
    num_object_tokens=5,
    keep_ratio=0.3,
    cascade=(1.0, 0.8, 0.6, 0.6, 0.4, 0.2),
    modulation="top_down",
    object_score="logit_product",
    seed=0,
    dtype=torch.float32,
):
    torch.manual_seed(seed)
    selector = ForegroundTokenSelector(
        TokenScoreNetwork(DIM, DIM),
        modulation=modulation,
        keep_ratio=keep_ratio,
        cascade_ratios=cascade,
    )
    layer = DualAttentionEncoderLayer(
        DIM,
        num_heads=4,
        feedforward_dim=64,
        num_points=2,
        num_object_tokens=num_object_tokens,
        object_score=object_score,
    )
    encoder = FocusEncoder(selector, layer)
    for p in encoder.parameters():  # non-trivial weights everywhere (MSDA init zeroes some)
        p.data.add_(torch.randn_like(p) * 0.05)
    projection, head = Projection(DIM), nn.Linear(DIM, CLASSES)
    return encoder.to(dtype), projection.to(dtype), head.to(dtype)


def run(encoder, projection, head, inputs):
    attach_projection(inputs, projection, head)
    with torch.no_grad():
        return encoder(inputs)


# ---------------------------------------------------------------- per-image float64 reference
def reference_self_attention(mha, x, pos):
    """Multi-head self-attention from the module's weights, by hand: q = k = x + pos, v = x."""
    w, b = mha.attn.in_proj_weight, mha.attn.in_proj_bias
    heads = mha.attn.num_heads
    qk = x + pos
    q, k, v = (
        qk @ w[:DIM].T + b[:DIM],
        qk @ w[DIM : 2 * DIM].T + b[DIM : 2 * DIM],
        x @ w[2 * DIM :].T + b[2 * DIM :],
    )
    split = lambda t: t.view(t.shape[0], heads, -1).transpose(0, 1)
    attn = torch.softmax(split(q) @ split(k).transpose(1, 2) / math.sqrt(DIM // heads), -1)
    out = (attn @ split(v)).transpose(0, 1).reshape(x.shape[0], DIM)
    return x + out @ mha.attn.out_proj.weight.T + mha.attn.out_proj.bias


def reference_encoder(encoder, inputs):
    """Algorithm 1 for ONE image (batch of 1, no padding), with Python indexing."""
    assert inputs.tokens.shape[0] == 1 and not inputs.padding_mask.any()
    tokens, pos = inputs.tokens[0], inputs.pos[0]
    refs = inputs.reference_points[0]
    fg = encoder.selector.score(
        inputs.proposal_projection(inputs.tokens + inputs.pos),
        inputs.padding_mask,
        inputs.spatial_shapes,
        inputs.level_start_index,
    )[0]
    keep = encoder.selector.keep_counts(inputs.padding_mask)[2][0].tolist()
    order = torch.argsort(fg, descending=True)
    memory = tokens.clone()
    kept_sets, object_sets = [], []
    for layer, count in zip(encoder.layers, keep):
        kept = order[:count]
        q, p = memory[kept], pos[kept]
        k = min(layer.num_object_tokens, count)
        if k > 0:
            score = inputs.class_head(q).max(-1).values * fg[kept]
            top = torch.argsort(score, descending=True)[:k]
            q = q.clone()
            q[top] = layer.norm2(reference_self_attention(layer.attentions[0], q[top], p[top]))
            object_sets.append(set(kept[top].tolist()))
        q = layer.attentions[1](
            q[None],
            value=tokens[None],
            query_pos=p[None],
            reference_points=refs[kept][None],
            spatial_shapes=inputs.spatial_shapes,
            level_start_index=inputs.level_start_index,
        )[0]
        q = layer.norms[1](layer.ffns[0](layer.norms[0](q)))
        memory = memory.clone()
        memory[kept] = q
        kept_sets.append(set(kept.tolist()))
    return memory, kept_sets, object_sets


def index_sets(index, valid, b):
    return set(index[b][valid[b]].tolist())


# ---------------------------------------------------------------------------------- tests
def test_scatter_gather_round_trip_and_invalid_slots():
    torch.manual_seed(0)
    full = torch.randn(3, 10, 4)
    index = torch.stack([torch.randperm(10)[:6] for _ in range(3)])
    valid = torch.arange(6)[None] < torch.tensor([6, 3, 0])[:, None]
    assert torch.equal(scatter_tokens(full, index, gather_tokens(full, index), valid), full)
    values = torch.randn(3, 6, 4)
    out = scatter_tokens(full, index, values, valid)
    expected = full.clone()
    for b in range(3):
        for k in range(6):
            if valid[b, k]:
                expected[b, index[b, k]] = values[b, k]
    assert torch.equal(out, expected)
    assert torch.equal(gather_tokens(out, index)[valid], values[valid])
    # invalid slots may hold any index (even duplicates of valid ones): they write nothing
    junk = torch.where(valid, index, index[:, :1])
    assert torch.equal(scatter_tokens(full, junk, values, valid), expected)
    # gradients: to the values of valid slots and to the untouched tokens
    full.requires_grad_(True)
    values.requires_grad_(True)
    scatter_tokens(full, index, values, valid).sum().backward()
    assert torch.equal(values.grad[..., 0], valid.float())
    assert full.grad.sum() == 3 * 10 * 4 - valid.sum() * 4
    with pytest.raises(ValueError, match="index must be"):
        gather_tokens(full, index[0])


def test_layer_keys_match_published():
    layer = DualAttentionEncoderLayer()
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == PUBLISHED_LAYER_KEYS
    assert (
        layer.self_attention is layer.attentions[0] and layer.cross_attention is layer.attentions[1]
    )


def test_encoder_matches_per_image_float64_reference():
    encoder, projection, head = build(dtype=torch.float64)
    scene = Scene(SIZES, DIM, dtype=torch.float64)
    for i in (0, 3):
        inputs = scene.alone(i)
        out = run(encoder, projection, head, inputs)
        with torch.no_grad():
            memory, kept_sets, object_sets = reference_encoder(encoder, inputs)
        assert torch.allclose(out.memory[0], memory, atol=1e-10)
        ex = out.selection
        for layer in range(6):
            assert index_sets(ex.kept_index[layer], ex.kept_valid[layer], 0) == kept_sets[layer]
            assert (
                index_sets(ex.object_index[layer], ex.object_valid[layer], 0) == object_sets[layer]
            )
        assert [len(o) for o in object_sets] == [min(5, len(k)) for k in kept_sets]


def test_mixed_size_batch_equals_each_image_alone():
    encoder, projection, head = build()
    scene = Scene(SIZES, DIM)
    batch = run(encoder, projection, head, scene.batch(pad_seed=1))
    other_padding = run(encoder, projection, head, scene.batch(pad_seed=2))
    ex = batch.selection
    assert torch.equal(ex.counts()[2], torch.tensor([3, 2, 1, 1, 1, 0]))
    for i in range(len(SIZES)):
        alone = run(encoder, projection, head, scene.alone(i))
        where = scene.batch_index(i)  # image i's tokens in the batch, in its own order
        to_own = {int(t): n for n, t in enumerate(where)}
        assert torch.allclose(batch.memory[i, where], alone.memory[0], atol=1e-5)
        assert torch.allclose(ex.scores[i, where], alone.selection.scores[0], atol=1e-5)
        assert torch.equal(ex.counts()[i], alone.selection.counts()[0])
        for layer in range(6):
            for key in ("kept", "object"):
                got = {
                    to_own[t]
                    for t in index_sets(
                        getattr(ex, key + "_index")[layer], getattr(ex, key + "_valid")[layer], i
                    )
                }
                want = index_sets(
                    getattr(alone.selection, key + "_index")[layer],
                    getattr(alone.selection, key + "_valid")[layer],
                    0,
                )
                assert got == want, (i, layer, key)
        # what lies in the padded region changes nothing for valid tokens
        assert torch.allclose(other_padding.memory[i, where], batch.memory[i, where], atol=1e-6)


def test_spatial_query_order_changes_nothing():
    """The layers' per-token part runs in token-index order (local deformable-attention reads);
    output, selections and gradients equal those of the kept list's own (score) order."""
    encoder, projection, head = build(dtype=torch.float64)
    inputs = attach_projection(Scene(SIZES, DIM, dtype=torch.float64).batch(), projection, head)
    results = []
    for spatial in (True, False):
        encoder.spatial_query_order = spatial
        encoder.zero_grad()
        out = encoder(inputs)
        out.memory.pow(2).sum().backward()
        results.append(
            (out, {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None})
        )
    (spatial, spatial_grads), (ranked, ranked_grads) = results
    index = ranked.selection.kept_index[0]
    assert not torch.equal(index[0], index[0].sort().values)  # score order is not spatial
    assert torch.allclose(spatial.memory, ranked.memory, rtol=0, atol=1e-12)
    for key in ("kept_index", "kept_valid", "object_index", "object_valid"):
        assert all(
            torch.equal(a, b)
            for a, b in zip(getattr(spatial.selection, key), getattr(ranked.selection, key))
        )
    assert spatial_grads.keys() == ranked_grads.keys()
    assert "layers.5.attentions.1.sampling_offsets.weight" in ranked_grads
    for name, grad in ranked_grads.items():
        assert torch.allclose(spatial_grads[name], grad, rtol=0, atol=1e-12), name


def test_padded_tokens_never_selected_or_changed():
    encoder, projection, head = build()
    inputs = Scene(SIZES, DIM).batch()
    out = run(encoder, projection, head, inputs)
    pad = inputs.padding_mask
    assert pad.any()
    for key in ("kept", "object"):
        for index, valid in zip(
            getattr(out.selection, key + "_index"), getattr(out.selection, key + "_valid")
        ):
            assert not torch.gather(pad, 1, index)[valid].any()
    assert torch.equal(out.memory[pad], inputs.tokens[pad])


def test_tokens_never_kept_keep_their_input_values():
    encoder, projection, head = build()
    inputs = Scene(SIZES, DIM).batch()
    out = run(encoder, projection, head, inputs)
    ever_kept = torch.zeros_like(inputs.padding_mask)
    for index, valid in zip(out.selection.kept_index, out.selection.kept_valid):
        ever_kept = scatter_tokens(ever_kept[..., None], index, valid[..., None], valid)[..., 0]
    untouched = ~ever_kept
    assert (untouched & ~inputs.padding_mask).any()
    assert torch.equal(out.memory[untouched], inputs.tokens[untouched])
    assert not torch.allclose(out.memory[ever_kept], inputs.tokens[ever_kept])


def test_keep_everything_without_object_tokens():
    encoder, projection, head = build(num_object_tokens=0, keep_ratio=1.0, cascade=(1.0, 1.0))
    inputs = Scene(SIZES, DIM).batch()
    out = run(encoder, projection, head, inputs)
    valid_tokens = [
        set((~inputs.padding_mask[b]).nonzero().flatten().tolist()) for b in range(len(SIZES))
    ]
    for index, valid in zip(out.selection.kept_index, out.selection.kept_valid):
        for b in range(len(SIZES)):
            assert index_sets(index, valid, b) == valid_tokens[b]
    assert out.selection.object_index == []
    assert torch.isfinite(out.memory).all()


def test_object_token_count_larger_than_kept_count():
    encoder, projection, head = build(num_object_tokens=10_000)
    inputs = Scene(SIZES, DIM).batch()
    out = run(encoder, projection, head, inputs)
    for layer in range(6):
        kept = out.selection.kept_valid[layer].sum(1)
        assert torch.equal(out.selection.object_valid[layer].sum(1), kept)
    alone = run(encoder, projection, head, Scene(SIZES, DIM).alone(0))
    assert torch.equal(alone.selection.object_valid[0].sum(1), alone.selection.kept_valid[0].sum(1))


def test_object_scores_and_fallback():
    logits = torch.tensor([[[1.0, -2.0], [-3.0, -1.0]]])
    fg = torch.tensor([[-2.0, -4.0]])
    assert torch.equal(object_token_scores(logits, fg), torch.tensor([[-2.0, 4.0]]))
    prob = object_token_scores(logits, fg, "probability_product")
    assert torch.allclose(prob, torch.sigmoid(torch.tensor([[1.0, -1.0]])) * torch.sigmoid(fg))
    assert torch.equal(object_token_scores(None, fg), fg)
    with pytest.raises(ValueError, match="object score mode"):
        object_token_scores(logits, fg, "sum")
    # without a class head the encoder still runs, ranking object tokens by the foreground logit
    encoder, projection, _ = build()
    out = run(encoder, projection, None, Scene(SIZES[:1], DIM).alone(0))
    fg_kept = torch.gather(out.selection.scores, 1, out.selection.kept_index[0])
    assert set(out.selection.object_index[0][0].tolist()) == set(
        out.selection.kept_index[0][0, torch.topk(fg_kept[0], 5).indices].tolist()
    )


def test_losses_and_gradients():
    encoder, projection, head = build()
    inputs = attach_projection(Scene(SIZES, DIM).batch(), projection, head)
    out = encoder(inputs)
    targets = [
        {"boxes_xyxy": torch.tensor([[4.0, 4.0, 60.0, 40.0]])},
        {"boxes_xyxy": torch.tensor([[0.0, 0.0, 30.0, 30.0], [10.0, 10.0, 47.0, 79.0]])},
        {"boxes_xyxy": torch.zeros(0, 4)},
        {"boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]]), "image_size": (40, 40)},
    ]
    losses = encoder.losses(out, targets)
    assert list(losses) == ["select_loss"] and losses["select_loss"] > 0
    assert torch.equal(
        encoder.losses({"encoder_output": out}, targets)["select_loss"], losses["select_loss"]
    )
    (losses["select_loss"] + out.memory.pow(2).mean()).backward()
    grads = {n: p.grad for n, p in encoder.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["selector.score_network.layer2.4.weight"].abs().sum() > 0
    assert grads["layers.0.attentions.0.attn.in_proj_weight"].abs().sum() > 0
    assert grads["layers.5.attentions.1.value_proj.weight"].abs().sum() > 0
    out.selection.strides = [4, 8, 16, 32]
    with pytest.raises(ValueError, match="strides"):
        encoder.losses(out, targets)


def test_kept_foreground_recall():
    encoder, projection, head = build()
    inputs = Scene(SIZES, DIM).batch()
    out = run(encoder, projection, head, inputs)
    masks = out.selection.kept_masks()
    for layer, (index, valid) in enumerate(zip(out.selection.kept_index, out.selection.kept_valid)):
        assert torch.equal(masks[layer].sum(1), valid.sum(1))
    # labels = exactly the tokens layer 1 keeps plus as many never-kept valid tokens
    never = ~masks.any(0) & ~inputs.padding_mask
    labels = masks[1] | never
    recall = kept_foreground_recall(out.selection, labels)
    expected_1 = masks[1].sum() / (masks[1].sum() + never.sum())
    assert torch.allclose(recall[1], expected_1.float())
    assert recall[0] >= recall[1]  # nested cascade: layer 0 keeps a superset
