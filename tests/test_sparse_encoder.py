"""`SparseDetrEncoder`: a per-image float64 reference, batch/padding invariance, the dense
encoder as the keep-ratio-1 limit, and its losses (attention-map target from the matching
decoder queries only, auxiliary encoder loss on valid kept slots)."""

from types import SimpleNamespace

import pytest
import torch

from focus_detr.modeling import DeformableEncoder, DeformableEncoderLayer, DINOCriterion
from focus_detr.modeling import HungarianMatcher
from focus_detr.modeling.focus import level_valid_sizes
from focus_detr.modeling.sparse import EncoderAuxiliaryLoss, SparseDetrEncoder, sparse_keep_counts
from focus_detr.modeling.transformer.multiscale import token_proposals

from focus_utils import Projection, Scene, attach_projection


DIM, CLASSES, LAYERS = 32, 5, 3
SIZES = [(64, 96), (48, 80), (8, 8), (40, 40)]  # 128, 81, 4 and 39 tokens


def build(keep_ratio=0.3, seed=0, dtype=torch.float64, aux_loss=True):
    torch.manual_seed(seed)
    layer = DeformableEncoderLayer(DIM, num_heads=4, num_levels=4, num_points=2, feedforward_dim=64)
    encoder = SparseDetrEncoder(
        layer,
        LAYERS,
        keep_ratio=keep_ratio,
        num_classes=CLASSES,
        aux_loss=aux_loss,
        aux_criterion=DINOCriterion(CLASSES, HungarianMatcher()),
    )
    for p in encoder.parameters():  # non-trivial weights everywhere (MSDA init zeroes some)
        p.data.add_(torch.randn_like(p) * 0.05)
    return encoder.to(dtype), Projection(DIM).to(dtype)


def attach_proposals(inputs):
    """The two-stage proposals DINOTransformer hands to its encoder (default settings)."""
    shapes = [tuple(hw) for hw in inputs.spatial_shapes.tolist()]
    sizes = level_valid_sizes(inputs.padding_mask, shapes, inputs.level_start_index.tolist())
    inputs.proposals, inputs.invalid_proposals = token_proposals(
        inputs.spatial_shapes, sizes.flip(-1).to(inputs.tokens), inputs.padding_mask
    )
    return inputs


def run(encoder, projection, inputs, train=False):
    attach_projection(inputs, projection)
    attach_proposals(inputs)
    encoder.train(train)
    with torch.set_grad_enabled(train):
        return encoder(inputs)


def reference_encoder(encoder, inputs):
    """Sparse DETR for ONE unpadded image with Python indexing: top int(S * rho) + 1 tokens by
    score, then per layer: kept tokens attend into the CURRENT full map, written back."""
    assert inputs.tokens.shape[0] == 1 and not inputs.padding_mask.any()
    tokens, pos, refs = inputs.tokens[0], inputs.pos[0], inputs.reference_points[0]
    logits = encoder.score_network(inputs.proposal_projection(inputs.tokens + inputs.pos))[0]
    count = int(tokens.shape[0] * encoder.keep_ratio) + 1
    kept = torch.argsort(logits, descending=True)[:count]
    memory = tokens.clone()
    for layer in encoder.layers:
        q = layer(
            memory[kept][None],
            pos[kept][None],
            refs[kept][None],
            inputs.spatial_shapes,
            inputs.level_start_index,
            None,
            value=memory[None],
        )[0]
        memory = memory.clone()
        memory[kept] = q
    return memory, set(kept.tolist())


def kept_set(out, b):
    index, valid = out.selection.kept_index[0], out.selection.kept_valid[0]
    return set(index[b][valid[b]].tolist())


def test_matches_per_image_reference_float64():
    scene = Scene(SIZES, DIM, seed=3, dtype=torch.float64)
    encoder, projection = build()
    for i in range(len(SIZES)):
        inputs = attach_projection(scene.alone(i), projection)
        out = run(encoder, projection, inputs)
        expected, kept = reference_encoder(encoder, inputs)
        torch.testing.assert_close(out.memory[0], expected, rtol=1e-10, atol=1e-10)
        assert kept_set(out, 0) == kept
        # tokens never kept keep their input values exactly
        other = torch.ones(expected.shape[0], dtype=torch.bool)
        other[list(kept)] = False
        assert torch.equal(out.memory[0][other], inputs.tokens[0][other])


def test_values_are_the_updated_map():
    """Attending into the ORIGINAL features (Focus-DETR's choice) gives other outputs: the
    reference above would not pass with the wrong values."""
    scene = Scene(SIZES[:1], DIM, seed=3, dtype=torch.float64)
    encoder, projection = build()
    inputs = attach_projection(scene.alone(0), projection)
    out = run(encoder, projection, inputs)
    index = out.selection.kept_index[0]  # one image: every slot valid
    memory = inputs.tokens
    refs = inputs.reference_points.flatten(2)
    for layer in encoder.layers:
        q = layer(
            memory[:, index[0]],
            inputs.pos[:, index[0]],
            refs[:, index[0]].view(1, -1, 4, 2),
            inputs.spatial_shapes,
            inputs.level_start_index,
            None,
            value=inputs.tokens,
        )
        memory = memory.clone()
        memory[:, index[0]] = q
    assert (memory - out.memory).abs().max() > 1e-3


def test_mixed_size_batch_equals_each_image_alone():
    scene = Scene(SIZES, DIM, seed=5, dtype=torch.float64)
    encoder, projection = build()
    batch = run(encoder, projection, scene.batch())
    valid_counts = [sum(h * w for h, w in sizes) for sizes in scene.sizes]
    counts = batch.selection.counts()[:, 0].tolist()
    assert counts == [int(v * 0.3) + 1 for v in valid_counts]
    padding = batch.selection.padding_mask
    for i in range(len(SIZES)):
        alone = run(encoder, projection, scene.alone(i))
        flat = scene.batch_index(i)
        # the scene helper rounds a padded image's valid ratios to float32: ~1e-8 differences
        torch.testing.assert_close(batch.memory[i, flat], alone.memory[0], rtol=1e-6, atol=1e-6)
        kept = kept_set(batch, i)
        assert len(kept) == counts[i]
        assert not padding[i, sorted(kept)].any()  # padding is never kept
        # the same tokens, in the image's own numbering
        assert {int(flat[j]) for j in kept_set(alone, 0)} == kept


def test_spatial_query_order_changes_nothing_but_the_order():
    """Kept tokens in token order (local deformable-attention reads) or by score: the same kept
    sets, valid slots a prefix, and the same memory, auxiliary losses and gradients."""
    scene = Scene(SIZES, DIM, seed=4, dtype=torch.float64)
    encoder, projection = build()
    targets = targets_for(len(SIZES))
    results = []
    for spatial in (True, False):
        encoder.spatial_query_order = spatial
        encoder.zero_grad()
        out = run(encoder, projection, scene.batch(), train=True)
        losses = encoder.losses(fake_outputs(out, len(SIZES), 0, 10), targets)
        (out.memory.pow(2).sum() + sum(losses.values())).backward()
        grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
        results.append((out, losses, grads))
    (spatial, spatial_losses, spatial_grads), (ranked, ranked_losses, ranked_grads) = results
    index, valid = spatial.selection.kept_index[0], spatial.selection.kept_valid[0]
    counts = spatial.selection.counts()[:, 0]
    assert torch.equal(valid, ranked.selection.kept_valid[0])  # a prefix of counts slots
    for b, c in enumerate(counts.tolist()):
        assert torch.equal(index[b, :c], index[b, :c].sort().values)
        assert kept_set(spatial, b) == kept_set(ranked, b)
    assert not torch.equal(index, ranked.selection.kept_index[0])  # the order did change
    assert torch.allclose(spatial.memory, ranked.memory, rtol=0, atol=1e-12)
    assert spatial_losses.keys() == ranked_losses.keys()
    for name, value in ranked_losses.items():
        torch.testing.assert_close(spatial_losses[name], value, rtol=1e-10, atol=1e-12)
    assert spatial_grads.keys() == ranked_grads.keys()
    assert {
        "layers.2.attentions.0.sampling_offsets.weight",
        "aux_box_heads.0.layers.0.weight",
        "score_network.layer1.0.weight",
    } <= ranked_grads.keys()
    for name, grad in ranked_grads.items():
        torch.testing.assert_close(spatial_grads[name], grad, rtol=1e-9, atol=1e-12)


def test_padded_features_never_matter():
    scene = Scene(SIZES, DIM, seed=7, dtype=torch.float64)
    encoder, projection = build()
    a = run(encoder, projection, scene.batch(pad_seed=1))
    b = run(encoder, projection, scene.batch(pad_seed=2))  # other noise in the padded region
    valid = ~a.selection.padding_mask
    torch.testing.assert_close(a.memory[valid], b.memory[valid], rtol=1e-10, atol=1e-10)


def test_keep_ratio_one_is_the_dense_encoder():
    scene = Scene(SIZES, DIM, seed=11, dtype=torch.float64)
    sparse, projection = build(keep_ratio=1.0)
    dense = DeformableEncoder(sparse.layers[0], LAYERS).to(torch.float64)
    dense.layers.load_state_dict(sparse.layers.state_dict())
    inputs = scene.batch()
    out = run(sparse, projection, inputs)
    with torch.no_grad():
        expected = dense(inputs).memory
    valid = ~inputs.padding_mask
    torch.testing.assert_close(out.memory[valid], expected[valid], rtol=1e-10, atol=1e-10)


def test_bad_arguments():
    layer = DeformableEncoderLayer(DIM, num_heads=4, num_points=2, feedforward_dim=64)
    with pytest.raises(ValueError, match="keep_ratio"):
        SparseDetrEncoder(layer, 2, keep_ratio=0.0)
    with pytest.raises(ValueError, match="num_aux_layers"):
        SparseDetrEncoder(layer, 2, num_aux_layers=3)


def test_training_with_auxiliary_heads_needs_the_proposals():
    scene = Scene(SIZES[:1], DIM, seed=2, dtype=torch.float64)
    encoder, projection = build()
    inputs = attach_projection(scene.batch(), projection)
    encoder.train()
    with pytest.raises(ValueError, match="EncoderInputs.proposals"):
        encoder(inputs)
    encoder.eval()  # inference does not need them
    with torch.no_grad():
        encoder(inputs)


# ------------------------------------------------------------------------------------ losses
def fake_outputs(encoder_output, n, num_dn, num_queries, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shape = (2, n, num_dn + num_queries, 4, 4, 2)
    loc = torch.rand(*shape, 2, generator=g, dtype=dtype)
    w = torch.rand(*shape, generator=g, dtype=dtype).flatten(-2).softmax(-1).view(shape)
    return {
        "encoder_output": encoder_output,
        "sampling_locations": loc,
        "attention_weights": w,
        "dn_meta": SimpleNamespace(num_queries=num_dn) if num_dn else None,
    }


def targets_for(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    targets = []
    for i in range(n):
        m = 1 + i % 3
        centre = torch.rand(m, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2
        size = torch.rand(m, 2, generator=g, dtype=torch.float64) * 0.3 + 0.05
        targets.append(
            {
                "labels": torch.randint(0, CLASSES, (m,), generator=g),
                "boxes": torch.cat([centre, size], -1),
            }
        )
    return targets


def test_attention_map_target_ignores_denoising_queries():
    scene = Scene(SIZES, DIM, seed=2, dtype=torch.float64)
    encoder, projection = build(aux_loss=False)
    out = run(encoder, projection, scene.batch(), train=True)
    outputs = fake_outputs(out, len(SIZES), num_dn=6, num_queries=10)
    losses = encoder.losses(outputs, targets_for(len(SIZES)))
    assert set(losses) == {"loss_mask_prediction"}
    # other denoising queries: same loss
    changed = dict(outputs)
    loc = outputs["sampling_locations"].clone()
    loc[:, :, :6] = torch.rand_like(loc[:, :, :6])
    changed["sampling_locations"] = loc
    torch.testing.assert_close(
        encoder.losses(changed, targets_for(len(SIZES)))["loss_mask_prediction"],
        losses["loss_mask_prediction"],
    )
    # other matching queries: another loss; and the gradient reaches the score network
    changed["sampling_locations"] = torch.rand_like(loc)
    other = encoder.losses(changed, targets_for(len(SIZES)))["loss_mask_prediction"]
    assert not torch.allclose(other, losses["loss_mask_prediction"])
    losses["loss_mask_prediction"].backward()
    assert encoder.score_network.layer2[-1].weight.grad.abs().sum() > 0
    # the targets: keep-count valid tokens per image
    selection = out.selection
    t = encoder.attention_map_loss.targets(
        outputs["sampling_locations"][:, :, 6:],
        outputs["attention_weights"][:, :, 6:],
        selection.spatial_shapes,
        selection.level_start_index,
        selection.padding_mask,
        selection.counts()[:, 0],
    )
    assert t.sum(1).tolist() == sparse_keep_counts(selection.padding_mask, 0.3).tolist()
    assert not bool((t.bool() & selection.padding_mask).any())


def test_losses_need_sampling():
    scene = Scene(SIZES[:1], DIM, seed=2, dtype=torch.float64)
    encoder, projection = build()
    out = run(encoder, projection, scene.batch(), train=True)
    with pytest.raises(KeyError, match="return_sampling"):
        encoder.losses({"encoder_output": out}, targets_for(1))


def test_auxiliary_loss_on_valid_kept_slots():
    scene = Scene(SIZES, DIM, seed=4, dtype=torch.float64)
    encoder, projection = build()
    out = run(encoder, projection, scene.batch(), train=True)
    extras = out.extras
    assert len(extras["aux_logits"]) == LAYERS - 1
    k = out.selection.kept_index[0].shape[1]
    assert extras["aux_logits"][0].shape == (len(SIZES), k, CLASSES)
    assert extras["aux_boxes"][0].shape == (len(SIZES), k, 4)
    targets = targets_for(len(SIZES))
    outputs = fake_outputs(out, len(SIZES), 0, 10)
    losses = encoder.losses(outputs, targets)
    expected_names = {
        f"{base}_enc_{i}"
        for base in ("loss_class", "loss_bbox", "loss_giou")
        for i in range(LAYERS - 1)
    } | {"loss_mask_prediction"}
    assert set(losses) == expected_names
    # invalid slots (images with fewer kept tokens than the batch's largest count) never matter
    valid = out.selection.kept_valid[0]
    assert not bool(valid.all())
    for name in ("aux_logits", "aux_boxes"):
        extras[name] = [x.masked_fill(~valid[..., None], 3.0) for x in extras[name]]
    again = encoder.losses(outputs, targets)
    for name, value in losses.items():
        torch.testing.assert_close(again[name], value)
    # main weights: box terms are 5x, GIoU 2x the unweighted criterion terms
    unweighted = encoder.aux_criterion.loss_boxes(
        extras["aux_boxes"][0],
        targets,
        [
            encoder.aux_criterion.matcher(
                {
                    "pred_logits": extras["aux_logits"][0][i : i + 1, :c],
                    "pred_boxes": extras["aux_boxes"][0][i : i + 1, :c],
                },
                [targets[i]],
            )[0]
            for i, c in enumerate(valid.sum(1).tolist())
        ],
        encoder.aux_criterion.num_boxes(targets, "cpu"),
    )
    torch.testing.assert_close(losses["loss_bbox_enc_0"], 5.0 * unweighted["loss_bbox"])
    torch.testing.assert_close(losses["loss_giou_enc_0"], 2.0 * unweighted["loss_giou"])
    sum(losses.values()).backward()
    assert encoder.aux_class_heads[0].weight.grad.abs().sum() > 0
    assert encoder.aux_box_heads[1].layers[0].weight.grad.abs().sum() > 0


def test_auxiliary_boxes_start_at_the_token_proposals():
    """Zero-initialized box heads: each kept token predicts its two-stage proposal box."""
    scene = Scene(SIZES[:1], DIM, seed=4, dtype=torch.float64)
    torch.manual_seed(0)
    layer = DeformableEncoderLayer(DIM, num_heads=4, num_points=2, feedforward_dim=64)
    encoder = SparseDetrEncoder(layer, 2, num_classes=CLASSES).to(torch.float64)
    projection = Projection(DIM).to(torch.float64)
    out = run(encoder, projection, scene.batch(), train=True)
    h0, w0 = scene.sizes[0][0]
    index = out.selection.kept_index[0][0]
    boxes = out.extras["aux_boxes"][0][0]
    for slot, token in enumerate(index.tolist()):
        if token >= h0 * w0:
            continue  # finest level only, by hand
        row, col = divmod(token, w0)
        box = torch.tensor([(col + 0.5) / w0, (row + 0.5) / h0, 0.05, 0.05], dtype=torch.float64)
        if ((box > 0.01) & (box < 0.99)).all():
            torch.testing.assert_close(boxes[slot], box)
        else:  # out-of-range proposals are +inf, as in two-stage DINO
            assert torch.equal(boxes[slot], torch.ones(4, dtype=torch.float64))


def test_batched_auxiliary_matching_equals_per_image_matching():
    """One cost matrix per layer for the whole batch gives the pairs of the matcher run on each
    image's valid slots alone: images with 0 targets, with fewer valid slots than targets, and
    invalid slots holding exact copies of a target (the cheapest match, if they could match)."""
    g = torch.Generator().manual_seed(0)
    n, k = 5, 12
    counts = [12, 7, 3, 9, 4]
    num_targets = [3, 0, 5, 1, 2]
    logits = torch.randn(n, k, CLASSES, generator=g, dtype=torch.float64)
    boxes = torch.cat(
        [
            torch.rand(n, k, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2,
            torch.rand(n, k, 2, generator=g, dtype=torch.float64) * 0.3 + 0.05,
        ],
        -1,
    )
    targets = []
    for i, m in enumerate(num_targets):
        target = {
            "labels": torch.randint(0, CLASSES, (m,), generator=g),
            "boxes": torch.cat(
                [
                    torch.rand(m, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2,
                    torch.rand(m, 2, generator=g, dtype=torch.float64) * 0.3 + 0.05,
                ],
                -1,
            ),
        }
        targets.append(target)
        if m:  # invalid slots: the first target's box with a confident logit of its class
            boxes[i, counts[i] :] = target["boxes"][0]
            logits[i, counts[i] :, target["labels"][0]] = 10.0
    valid = torch.arange(k)[None] < torch.tensor(counts)[:, None]
    matcher = HungarianMatcher()
    batched = EncoderAuxiliaryLoss(DINOCriterion(CLASSES, matcher)).match(
        logits, boxes, valid, targets
    )
    assert len(batched) == n
    for i, (count, m) in enumerate(zip(counts, num_targets)):
        alone = matcher(
            {"pred_logits": logits[i : i + 1, :count], "pred_boxes": boxes[i : i + 1, :count]},
            [targets[i]],
        )[0]
        rows, cols = batched[i]
        assert rows.dtype == cols.dtype == torch.int64
        assert torch.equal(rows, alone[0]) and torch.equal(cols, alone[1])
        assert len(rows) == min(count, m) and bool((rows < count).all())
    # no targets in the whole batch: empty pairs for every image
    empty = [{"labels": t["labels"][:0], "boxes": t["boxes"][:0]} for t in targets]
    matched = EncoderAuxiliaryLoss(DINOCriterion(CLASSES, matcher)).match(
        logits, boxes, valid, empty
    )
    assert [(len(r), len(c)) for r, c in matched] == [(0, 0)] * n
