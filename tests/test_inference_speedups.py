"""Inference speed-ups compute what the reference paths compute (float64): folded conv + frozen
batch norm, one product for several layers' value projections, the Focus encoder's ranked-prefix
update, the two-stage box head on the selected tokens only; and they leave the state-dict keys
and the training path alone."""

import copy

import pytest
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling.backbone import BasicStem, ResNet
from torch import nn

from focus_detr.layers import MultiScaleDeformableAttention
from focus_detr.layers.folded_conv import FoldedNormConv2d, fold_conv_norms
from focus_detr.layers.ms_deform_attn import project_values
from focus_detr.modeling import instantiate_model
from focus_detr.modeling.transformer import decoder as decoder_module

import dino_utils
from test_focus_encoder import DIM, build, reference_encoder
from focus_utils import Scene, attach_projection


def _randomize(norm):
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    return norm


def _conv(norm="frozen", bias=False):
    torch.manual_seed(0)
    bn = FrozenBatchNorm2d(6) if norm == "frozen" else nn.BatchNorm2d(6)
    return (
        Conv2d(3, 6, 3, padding=1, bias=bias, norm=_randomize(bn), activation=nn.ReLU())
        .double()
        .eval()
    )


# ---------------------------------------------------------------- folded conv + batch norm
@pytest.mark.parametrize("norm", ["frozen", "batchnorm"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels_last", [None, False])
def test_folded_conv_equals_conv_then_norm(norm, bias, channels_last):
    conv = _conv(norm, bias)
    reference = copy.deepcopy(conv)
    keys = list(conv.state_dict())
    assert fold_conv_norms(conv, channels_last) == 1 and isinstance(conv, FoldedNormConv2d)
    assert list(conv.state_dict()) == keys and conv.norm is not None  # nothing removed
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        out = conv(x)
        assert conv._folded_cache is not None  # the folded path ran
        torch.testing.assert_close(out, reference(x), rtol=1e-12, atol=1e-12)
    # channels-last on CPU by default, the input's layout otherwise
    assert out.is_contiguous(memory_format=torch.channels_last) == (channels_last is None)


def test_folded_cache_follows_weight_changes():
    conv, other = _conv(), _conv()
    with torch.no_grad():
        other.weight.mul_(-2.0)
        other.norm.running_mean.add_(1.0)
    fold_conv_norms(conv)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        conv(x)
        conv.load_state_dict(other.state_dict())  # in-place copies: new versions
        torch.testing.assert_close(conv(x), other(x), rtol=1e-12, atol=1e-12)
        conv.norm.running_var.mul_(3.0)
        other.norm.running_var.mul_(3.0)
        torch.testing.assert_close(conv(x), other(x), rtol=1e-12, atol=1e-12)


def test_folded_cache_follows_batch_norm_statistics_of_a_train_forward():
    # a train-mode BatchNorm2d updates running_mean / running_var without a version bump: an
    # evaluation after train-mode forwards (no optimizer step, e.g. re-estimated statistics)
    # must see the new statistics
    conv = _conv("batchnorm")
    reference = copy.deepcopy(conv)
    fold_conv_norms(conv)
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        conv(x)  # folded and cached
        batch = torch.randn(4, 3, 7, 9, dtype=torch.float64) * 3 + 1
        for module in (conv, reference):
            module.train()
            module(batch)
            module.eval()
        assert not torch.equal(conv.norm.running_mean, _conv("batchnorm").norm.running_mean)
        torch.testing.assert_close(conv(x), reference(x), rtol=1e-12, atol=1e-12)


def test_folding_leaves_training_and_tracing_alone():
    conv = _conv("batchnorm")
    reference = copy.deepcopy(conv)
    fold_conv_norms(conv)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    # a batch norm in training mode normalizes with batch statistics: never folded
    conv.train(), reference.train()
    with torch.no_grad():
        torch.testing.assert_close(conv(x), reference(x))
    assert getattr(conv, "_folded_cache", None) is None
    # with autograd recording, the module's own path runs and gradients reach the norm
    conv.eval(), reference.eval()
    conv(x).sum().backward()
    reference(x).sum().backward()
    assert getattr(conv, "_folded_cache", None) is None
    torch.testing.assert_close(conv.norm.weight.grad, reference.norm.weight.grad)
    torch.testing.assert_close(conv.weight.grad, reference.weight.grad)
    # jit tracing (FLOP counting) sees the convolution and the norm
    with torch.no_grad():
        graph = str(torch.jit.trace(conv, x).inlined_graph)
    assert "batch_norm" in graph


def test_folded_resnet_equals_reference():
    torch.manual_seed(0)
    stages = ResNet.make_default_stages(50, stride_in_1x1=False, norm="FrozenBN")[:2]
    net = (
        ResNet(
            BasicStem(3, 64, norm="FrozenBN"), stages, out_features=["res2", "res3"], freeze_at=1
        )
        .double()
        .eval()
    )
    for m in net.modules():
        if isinstance(m, FrozenBatchNorm2d):
            _randomize(m)
    reference = copy.deepcopy(net)
    assert fold_conv_norms(net) == sum(isinstance(m, Conv2d) for m in net.modules())
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        out, expected = net(x), reference(x)
    for k in expected:
        torch.testing.assert_close(out[k], expected[k], rtol=1e-10, atol=1e-10)


def test_dino_folds_its_backbone_without_changing_keys():
    cfg = dino_utils.tiny_cfg()
    model = dino_utils.tiny_model()
    cfg.model.fold_backbone_norms = False
    torch.manual_seed(0)
    plain = instantiate_model(cfg.model)
    assert list(model.state_dict()) == list(plain.state_dict())
    folded = [m for m in model.backbone.modules() if isinstance(m, FoldedNormConv2d)]
    assert folded and not any(isinstance(m, FoldedNormConv2d) for m in plain.modules())


# ---------------------------------------------------------------- value projections
def test_project_values_equals_each_modules_projection():
    torch.manual_seed(0)
    modules = [
        MultiScaleDeformableAttention(16, 4, 2, 2, batch_first=True).double() for _ in range(3)
    ]
    for m in modules:
        nn.init.normal_(m.value_proj.bias)
    value = torch.randn(2, 10, 16, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[1, 7:] = True
    together = project_values(modules, value, mask)
    separate = [m.project_value(value, mask) for m in modules]
    for a, b in zip(together, separate):
        assert a.is_contiguous()
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert (together[0][1, 7:] == 0).all()
    weights = torch.randn(3, 2, 10, 16, dtype=torch.float64)
    g1 = torch.autograd.grad(
        sum((w * t).sum() for w, t in zip(weights, together)),
        [value] + [m.value_proj.weight for m in modules],
    )
    g2 = torch.autograd.grad(
        sum((w * t).sum() for w, t in zip(weights, separate)),
        [value] + [m.value_proj.weight for m in modules],
    )
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_project_values_under_autocast_cast_the_map_once():
    """Under CPU autocast the map is cast to bfloat16 once and every module's projection equals
    its own autocast projection (same dtype, same numbers)."""
    torch.manual_seed(2)
    modules = [MultiScaleDeformableAttention(16, 4, 2, 2, batch_first=True) for _ in range(3)]
    value = torch.randn(2, 10, 16)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 8:] = True
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        together = project_values(modules, value, mask)
        separate = [m.project_value(value, mask) for m in modules]
    for a, b in zip(together, separate):
        assert a.dtype == b.dtype == torch.bfloat16
        assert torch.equal(a, b)


def test_value_projections_zero_exactly_the_padded_tokens():
    """A mask without padded tokens (skipped on CPU) gives the unmasked projection; a partial
    mask zeroes exactly its tokens, through one module and through `project_values`."""
    torch.manual_seed(1)
    modules = [MultiScaleDeformableAttention(16, 4, 2, 2, batch_first=True) for _ in range(2)]
    for m in modules:
        nn.init.normal_(m.value_proj.bias)
    value = torch.randn(2, 10, 16)
    unpadded = torch.zeros(2, 10, dtype=torch.bool)
    padded = unpadded.clone()
    padded[0, 6:] = True
    for project in (
        lambda mask: [m.project_value(value, mask) for m in modules],
        lambda mask: project_values(modules, value, mask),
    ):
        plain = project(None)
        assert all(torch.equal(a, b) for a, b in zip(project(unpadded), plain))
        for out, ref in zip(project(padded), plain):
            assert (out[padded] == 0).all() and torch.equal(out[~padded], ref[~padded])
            assert (ref[padded] != 0).all()


def test_decoder_with_one_value_product_equals_per_layer_projections(monkeypatch):
    model = dino_utils.tiny_model().double().eval()
    batch = dino_utils.make_batch([(64, 96), (48, 64)], [2, 3])
    for x in batch:
        x["image"] = x["image"].double()
    with torch.no_grad():
        images = model.preprocess_image(batch)
        fast = model.compute_outputs(images)
        monkeypatch.setattr(
            decoder_module, "project_values", lambda modules, *a: [None] * len(modules)
        )
        slow = model.compute_outputs(images)
    for key in ("pred_logits", "pred_boxes", "enc_topk_indices"):
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- two-stage proposals
def test_proposal_boxes_equal_box_head_over_every_token():
    model = dino_utils.tiny_model().double().eval()
    batch = dino_utils.make_batch([(64, 96), (48, 64)], [2, 3])
    for x in batch:
        x["image"] = x["image"].double()
    with torch.no_grad():
        out = model.compute_outputs(model.preprocess_image(batch))
        transformer = model.transformer
        inputs = out["encoder_inputs"]
        from focus_detr.modeling.transformer.multiscale import token_proposals, valid_sizes

        masks = out["level_masks"]
        proposals, invalid = token_proposals(
            inputs.spatial_shapes, valid_sizes(masks), inputs.padding_mask
        )
        projected = transformer.project_proposals(out["memory"], invalid)
        every = transformer.decoder.proposal_box_head(projected) + proposals  # all tokens
        topk = out["enc_topk_indices"]
        expected = every.gather(1, topk[..., None].expand(-1, -1, 4)).sigmoid()
    torch.testing.assert_close(out["enc_outputs"]["pred_boxes"], expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- Focus encoder
def test_focus_encoder_training_path_equals_reference_with_gradients():
    """With autograd recording (the out-of-place branch), the encoder equals the per-layer
    full-map reference, and so do the gradients of the input tokens."""
    encoder, projection, head = build(dtype=torch.float64)
    inputs = attach_projection(
        Scene([(48, 80)], DIM, dtype=torch.float64).alone(0), projection, head
    )
    inputs.tokens.requires_grad_(True)
    out = encoder(inputs)
    memory, _, _ = reference_encoder(encoder, inputs)
    torch.testing.assert_close(out.memory[0], memory, rtol=1e-10, atol=1e-10)
    weight = torch.randn_like(memory)
    (g_fast,) = torch.autograd.grad((out.memory[0] * weight).sum(), inputs.tokens)
    (g_ref,) = torch.autograd.grad((memory * weight).sum(), inputs.tokens)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("shape, identity", [((2, 37, 8), False), ((1, 64, 8), True)])
def test_ffn_in_chunks_at_inference_equals_one_pass(shape, identity):
    """Chunked rows (inference only; the last chunk shorter) give the one-pass result; training
    and autograd take the one-pass path."""
    from focus_detr.layers import FFN

    torch.manual_seed(0)
    ffn = FFN(embed_dim=8, feedforward_dim=16, inference_chunk=10).double().eval()
    x = torch.randn(*shape, dtype=torch.float64)
    residual = torch.randn(*shape, dtype=torch.float64) if identity else None
    expected = (x if residual is None else residual) + ffn.layers[1](
        torch.relu(ffn.layers[0][0](x))
    )
    with torch.no_grad():
        chunked = ffn(x, residual)
    torch.testing.assert_close(chunked, expected, rtol=0, atol=1e-12)
    x.requires_grad_(True)
    out = ffn(x, residual)  # grad enabled: one pass, differentiable
    out.sum().backward()
    torch.testing.assert_close(out.detach(), expected, rtol=0, atol=1e-12)
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="inference_chunk"):
        FFN(embed_dim=8, feedforward_dim=16, inference_chunk=-1)
