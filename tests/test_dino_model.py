"""DINO end to end on a tiny random model: output shapes and types in training and inference,
batches of mixed sizes, padding invariance, degenerate inputs, encoder hooks, both config
systems."""

import copy

import pytest
import torch
from detectron2.config import instantiate
from detectron2.structures import Instances

from focus_detr.layers import ms_deform_attn
from focus_detr.modeling import DINO, DeformableEncoder
from focus_detr.modeling.transformer import EncoderOutput, deformable_sampling

from dino_utils import make_batch, tiny_cfg, tiny_model

K = 5  # classes
Q = 30  # queries
LAYERS = 3  # decoder layers of the tiny config
LOSS_BASES = ("loss_class", "loss_bbox", "loss_giou")


def expected_loss_keys(num_aux=LAYERS - 1):
    suffixes = (
        ["", "_enc", "_dn"]
        + [f"_{i}" for i in range(num_aux)]
        + [f"_dn_{i}" for i in range(num_aux)]
    )
    return {b + s for b in LOSS_BASES for s in suffixes}


@pytest.fixture(scope="module")
def model():
    return tiny_model(num_classes=K, num_queries=Q)


@pytest.mark.parametrize(
    "sizes,counts",
    [
        ([(96, 128)], [3]),
        ([(96, 128), (64, 100), (80, 80)], [3, 1, 4]),
    ],
)
def test_train_outputs_and_losses(model, sizes, counts):
    model.train()
    batch = make_batch(sizes, counts, K)
    images = model.preprocess_image(batch)
    targets = model.prepare_targets(batch)
    torch.manual_seed(0)
    out = model.compute_outputs(images, targets)
    n = len(sizes)
    meta = out["dn_meta"]
    assert meta.max_gt == max(counts) and meta.num_groups == 8 // max(counts)
    d = meta.num_queries
    assert out["pred_logits"].shape == (n, Q, K) and out["pred_boxes"].shape == (n, Q, 4)
    assert len(out["aux_outputs"]) == LAYERS - 1
    for aux in out["aux_outputs"] + [out["enc_outputs"]]:
        assert aux["pred_logits"].shape == (n, Q, K) and aux["pred_boxes"].shape == (n, Q, 4)
    assert out["dn_outputs"]["pred_logits"].shape == (n, d, K)
    assert len(out["dn_outputs"]["aux_outputs"]) == LAYERS - 1
    assert out["references"].shape == (LAYERS, n, d + Q, 4)
    assert out["init_reference"].shape == (n, d + Q, 4)
    assert out["enc_topk_indices"].dtype == torch.int64
    s = sum(f.shape[-2] * f.shape[-1] for f in out["neck_features"])
    assert out["memory"].shape == (n, s, 64)
    for key in ("pred_boxes", "init_reference"):
        assert ((out[key] >= 0) & (out[key] <= 1)).all()
    # padded tokens are never proposals
    padded = out["encoder_inputs"].padding_mask.gather(1, out["enc_topk_indices"])
    assert not padded.any()

    torch.manual_seed(0)
    losses = model(batch)
    assert set(losses) == expected_loss_keys()
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    total = sum(losses.values())
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:5])
    assert model.label_enc.weight.grad.abs().sum() > 0  # denoising queries reach the loss
    model.zero_grad()


@pytest.mark.parametrize("sizes", [[(96, 128)], [(96, 128), (64, 100), (80, 80)]])
def test_inference_outputs(model, sizes):
    model.eval()
    batch = make_batch(sizes, [1] * len(sizes), K)
    for b, (h, w) in zip(batch, sizes):  # ask for a different output size
        b["height"], b["width"] = 2 * h, 3 * w
    with torch.no_grad():
        results = model(batch)
    assert len(results) == len(sizes)
    for r, (h, w) in zip(results, sizes):
        inst = r["instances"]
        assert isinstance(inst, Instances) and inst.image_size == (2 * h, 3 * w)
        assert 0 < len(inst) <= 20
        assert inst.pred_classes.dtype == torch.int64 and inst.pred_classes.max() < K
        assert (inst.scores[:-1] >= inst.scores[1:]).all()  # score order
        boxes = inst.pred_boxes.tensor
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 3 * w).all()
        assert (boxes[:, 3] <= 2 * h).all()


def test_postprocess_scales_to_output_size(model):
    """Top-k over queries x classes, boxes from normalized cxcywh to output pixels."""
    logits = torch.full((1, 4, 3), -10.0)
    logits[0, 2, 1] = 5.0
    logits[0, 0, 2] = 3.0
    boxes = torch.tensor(
        [[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1], [0.25, 0.5, 0.5, 0.4], [0.5, 0.5, 1.0, 1.0]]]
    )
    m = copy.copy(model)
    m.select_box_nums_for_evaluation = 2
    res = m.postprocess(logits, boxes, [(100, 200)], [{"height": 50, "width": 400}])
    inst = res[0]["instances"]
    assert inst.pred_classes.tolist() == [1, 2]
    torch.testing.assert_close(inst.scores, torch.tensor([5.0, 3.0]).sigmoid())
    # query 2: cx .25, cy .5, w .5, h .4 of a 200 x 100 input, rescaled to 400 x 50
    torch.testing.assert_close(inst.pred_boxes.tensor[0], torch.tensor([0.0, 15.0, 200.0, 35.0]))


def _run_with_neck_edit(model, batch, edit):
    """Eval outputs of `model` on `batch`, with `edit(features, level_masks)` applied to the neck
    outputs in place."""

    def hook(_, __, outputs):
        images = model.preprocess_image(batch)
        mask = model.padding_mask(images)
        masks = [
            torch.nn.functional.interpolate(mask[None].float(), size=f.shape[-2:]).bool()[0]
            for f in outputs
        ]
        edit(outputs, masks)
        return outputs

    handle = model.neck.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model.compute_outputs(model.preprocess_image(batch))
    finally:
        handle.remove()


def test_padding_is_masked_at_inference(model):
    """Changing the neck features of the padded region changes no output of any image; the same
    change inside an image's valid region does change it (so the check can fail)."""
    model.eval()
    batch = make_batch([(128, 160), (64, 96), (96, 64)], [1, 1, 1], K)
    keys = (
        "pred_logits",
        "pred_boxes",
        "enc_logits",
        "enc_boxes",
        "enc_topk_indices",
        "references",
    )
    base = _run_with_neck_edit(model, batch, lambda f, m: None)
    assert all(m.any() for m in base["level_masks"])  # every level has padding

    def scramble(where):
        def edit(features, masks):
            g = torch.Generator().manual_seed(1)
            for f, m in zip(features, masks):
                noise = torch.randn(f.shape, generator=g) * 10
                sel = where(m)[:, None].expand_as(f)
                f[sel] = noise[sel]

        return edit

    padded = _run_with_neck_edit(model, batch, scramble(lambda m: m))
    for k in keys:
        assert torch.equal(base[k], padded[k]), k
    valid_tokens = ~base["encoder_inputs"].padding_mask
    assert torch.equal(base["memory"][valid_tokens], padded["memory"][valid_tokens])

    def first_image_valid(m):
        sel = ~m
        sel[1:] = False
        return sel

    changed = _run_with_neck_edit(model, batch, scramble(first_image_valid))
    assert not torch.equal(base["pred_logits"][0], changed["pred_logits"][0])
    assert torch.equal(base["pred_logits"][1:], changed["pred_logits"][1:])


def test_image_without_objects_trains_without_nan(model):
    model.train()
    for counts in ([0], [0, 2]):
        batch = make_batch([(96, 96)] * len(counts), counts, K)
        losses = model(batch)
        assert set(losses) == expected_loss_keys()
        total = sum(losses.values())
        assert torch.isfinite(total)
        total.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad()


def test_image_too_small_for_the_query_budget_is_named(model):
    """A 32 x 32 image has 16 + 4 + 1 + 1 = 22 tokens < 30 queries: alone or batched, in
    inference or training, the error names the image and its token count (no padded token
    becomes a query, no image gets fewer queries than its batch mates)."""
    message = (
        r"image {} of the batch is too small for the query budget: 22 tokens "
        r"\(levels HxW 4x4, 2x2, 1x1, 1x1\) for num_queries=30"
    )
    model.eval()
    with torch.no_grad(), pytest.raises(ValueError, match=message.format(0)):
        model(make_batch([(32, 32)], [1], K))
    model.train()
    with pytest.raises(ValueError, match=message.format(1)):
        model(make_batch([(96, 128), (32, 32)], [2, 1], K))
    model.eval()
    with torch.no_grad():  # 36 + 9 + 4 + 1 = 50 tokens: enough
        out = model.compute_outputs(model.preprocess_image(make_batch([(48, 48)], [1], K)))
    assert out["pred_logits"].shape == (1, Q, K)


class EncoderWithLoss(DeformableEncoder):
    """A dense encoder that asks for the decoder sampling and adds a loss of its own."""

    needs_decoder_sampling = True

    def forward(self, inputs):
        out = super().forward(inputs)
        return EncoderOutput(out.memory, extras={"tokens": inputs.tokens.shape[1]})

    def losses(self, outputs, targets):
        self.seen = outputs
        return {"loss_encoder_extra": outputs["encoder_output"].memory.mean() * 0 + 1.5}


def test_encoder_swap_by_one_override_and_encoder_losses():
    cfg = tiny_cfg(num_classes=K, num_queries=Q)
    reference = instantiate(cfg.model)
    cfg.model.transformer.encoder._target_ = EncoderWithLoss  # the one-line swap
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert isinstance(model.transformer.encoder, EncoderWithLoss)
    assert model.state_dict().keys() == reference.state_dict().keys()
    model.train()
    batch = make_batch([(96, 128), (64, 64)], [2, 1], K)
    losses = model(batch)
    assert losses["loss_encoder_extra"].item() == 1.5
    seen = model.transformer.encoder.seen
    d = seen["dn_meta"].num_queries
    loc, w = seen["sampling_locations"], seen["attention_weights"]
    assert loc.shape == (LAYERS, 2, d + Q, 4, 4, 4, 2) and w.shape == (LAYERS, 2, d + Q, 4, 4, 4)
    torch.testing.assert_close(w.sum((-1, -2)), torch.ones(LAYERS, 2, d + Q, 4))
    assert seen["encoder_output"].extras["tokens"] == seen["memory"].shape[1]


def test_returned_sampling_is_what_the_cross_attention_uses(model):
    """Recompute the last decoder layer's cross attention from the returned locations and
    weights: it reproduces the module's output. The attention hands them back from its forward
    (no second computation): they equal the stand-alone `deformable_sampling` of its inputs, and
    the predictions equal those of a run without them."""
    model.eval()
    batch = make_batch([(96, 128)], [1], K)
    captured = {}
    attn = model.transformer.decoder.layers[-1].attentions[1]

    def hook(module, args, kwargs, output):
        assert kwargs.get("return_sampling") and isinstance(output, tuple)
        captured.update(kwargs, query=args[0], output=output[0])

    handle = attn.register_forward_hook(hook, with_kwargs=True)
    with torch.no_grad():
        out = model.compute_outputs(model.preprocess_image(batch), return_sampling=True)
    handle.remove()
    with torch.no_grad():
        plain = model.compute_outputs(model.preprocess_image(batch))
        alone = deformable_sampling(
            attn,
            captured["query"] + captured["query_pos"],
            captured["reference_points"],
            captured["spatial_shapes"],
        )
    assert "sampling_locations" not in plain
    for key in ("pred_logits", "pred_boxes"):
        assert torch.equal(out[key], plain[key])
    assert torch.equal(out["sampling_locations"][-1], alone[0])
    assert torch.equal(out["attention_weights"][-1], alone[1])
    value = attn.value_proj(captured["value"]).masked_fill(
        captured["key_padding_mask"][..., None], 0.0
    )
    value = value.view(*value.shape[:2], attn.num_heads, -1)
    sampled = ms_deform_attn(
        value,
        captured["spatial_shapes"],
        captured["level_start_index"],
        out["sampling_locations"][-1],
        out["attention_weights"][-1],
    )
    expect = attn.output_proj(sampled) + captured["query"]
    torch.testing.assert_close(expect, captured["output"], rtol=1e-5, atol=1e-5)


def test_yacs_config_builds_the_same_model():
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from focus_detr.modeling import add_dino_config

    cfg = add_dino_config(get_cfg())
    cfg.MODEL.META_ARCHITECTURE = "DINO"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.DINO.HIDDEN_DIM = 64
    cfg.MODEL.DINO.NUM_CLASSES = K
    cfg.MODEL.DINO.NUM_QUERIES = Q
    cfg.MODEL.DINO.ENC_LAYERS = 1
    cfg.MODEL.DINO.DEC_LAYERS = 2
    model = build_model(cfg)
    assert isinstance(model, DINO)
    assert model.transformer.num_queries == Q and len(model.transformer.decoder.layers) == 2
    model.train()
    losses = model(make_batch([(96, 128)], [2], K))
    assert set(losses) == expected_loss_keys(num_aux=1)


def test_yacs_example_file_merges():
    from detectron2.config import get_cfg

    from focus_detr.engine import REPO_ROOT
    from focus_detr.modeling import add_dino_config

    cfg = add_dino_config(get_cfg())
    cfg.merge_from_file(str(REPO_ROOT / "projects/dino/configs/yacs/dino_r50_4scale_12ep.yaml"))
    assert cfg.MODEL.META_ARCHITECTURE == "DINO" and cfg.MODEL.DINO.NUM_QUERIES == 900


def test_mismatched_class_counts_are_errors():
    cfg = tiny_cfg(num_classes=K)
    cfg.model.denoising.num_classes = K + 1
    with pytest.raises(ValueError, match="denoising"):
        instantiate(cfg.model)
    cfg = tiny_cfg(num_classes=K)
    cfg.model.transformer.decoder.num_classes = K + 1
    with pytest.raises(ValueError, match="decoder heads"):
        instantiate(cfg.model)
    cfg = tiny_cfg(num_classes=K)
    cfg.model.criterion.num_classes = K + 1
    with pytest.raises(
        ValueError, match=f"num_classes={K} but the criterion was built for {K + 1} classes"
    ):
        instantiate(cfg.model)


def test_r50_config_matches_yacs_defaults():
    """The yacs defaults build DINO-R50 with exactly the keys and shapes of the LazyConfig."""
    from detectron2.config import LazyConfig, get_cfg
    from detectron2.modeling import build_model

    from focus_detr.modeling import add_dino_config
    from dino_utils import R50_MODEL

    cfg = add_dino_config(get_cfg())
    cfg.MODEL.META_ARCHITECTURE = "DINO"
    cfg.MODEL.DEVICE = "cpu"
    yacs = {k: v.shape for k, v in build_model(cfg).state_dict().items()}
    lazy = {
        k: v.shape for k, v in instantiate(LazyConfig.load(R50_MODEL).model).state_dict().items()
    }
    assert yacs == lazy
