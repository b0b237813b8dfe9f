"""Encoders as interchangeable parts of one DINO transformer: dense, Sparse DETR and Focus build
from the same config with one override, share every non-encoder key, bring their own losses and
train (forward/backward) and infer."""

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from focus_detr.modeling import instantiate_model
from focus_detr.engine import REPO_ROOT
from focus_detr.engine.config import apply_overrides
from focus_detr.modeling import DeformableEncoder
from focus_detr.modeling.encoders import ENCODER_NAMES, build_encoder
from focus_detr.modeling.focus import FocusEncoder
from focus_detr.modeling.sparse import SparseDetrEncoder

from dino_utils import make_batch


TINY = str(REPO_ROOT / "projects/sparse_detr/configs/dino_sparse_tiny_synthetic.py")
R50 = str(REPO_ROOT / "projects/sparse_detr/configs/dino_sparse_r50_4scale_36ep.py")
DINO_R50_MODEL = str(REPO_ROOT / "projects/dino/configs/models/dino_r50.py")
CLASSES = 6
TYPES = {"dense": DeformableEncoder, "sparse": SparseDetrEncoder, "focus": FocusEncoder}
ENCODER_LOSSES = {
    "dense": set(),
    "sparse": {"loss_mask_prediction", "loss_class_enc_0", "loss_bbox_enc_0", "loss_giou_enc_0"},
    "focus": {"select_loss"},
}


def tiny_cfg(*overrides):
    cfg = LazyConfig.load(TINY)
    cfg.model.transformer.num_queries = 30
    cfg.model.denoising.num_dn_queries = 8
    cfg.model.select_box_nums_for_evaluation = 20
    return apply_overrides(cfg, list(overrides))


def build(*overrides, seed=0):
    torch.manual_seed(seed)
    return instantiate_model(tiny_cfg(*overrides).model)


def outside_encoder(model):
    return {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.startswith("transformer.encoder.")
    }


@pytest.fixture(scope="module")
def models():
    return {name: build(f"model.transformer.encoder.name={name}") for name in ENCODER_NAMES}


def test_one_override_builds_each_encoder_and_shares_every_other_key(models):
    for name, model in models.items():
        assert type(model.transformer.encoder) is TYPES[name]
        assert model.transformer.encoder.num_layers == 2
    dense_keys = outside_encoder(models["dense"])
    assert outside_encoder(models["sparse"]) == dense_keys
    assert outside_encoder(models["focus"]) == dense_keys
    # the encoder keys differ: each encoder's own modules
    assert any("score_network" in k for k in models["sparse"].state_dict())
    assert not any("score_network" in k for k in models["dense"].state_dict())
    # a dense DINO state dict loads into the sparse model: its encoder layers have the dense
    # layers' names, only the token scorer and the auxiliary heads are new
    result = models["sparse"].load_state_dict(models["dense"].state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(
        k.startswith(("transformer.encoder.score_network.", "transformer.encoder.aux_"))
        for k in result.missing_keys
    )
    result = models["focus"].load_state_dict(models["dense"].state_dict(), strict=False)
    assert all(k.startswith("transformer.encoder.") for k in result.missing_keys)
    assert all(k.startswith("transformer.encoder.") for k in result.unexpected_keys)


def test_shared_knobs_reach_every_choice():
    cfg = tiny_cfg(
        "model.transformer.encoder.keep_ratio=0.2",
        "model.transformer.encoder.num_layers=3",
        "model.transformer.encoder.choices.focus.selector.cascade_ratios=[1.0,0.8,0.6]",
        "model.transformer.encoder.choices.dense.layer.num_points=2",
    )
    for name in ENCODER_NAMES:
        cfg.model.transformer.encoder.name = name
        encoder = instantiate(cfg.model.transformer.encoder)
        assert encoder.num_layers == 3
        # every choice takes the dense layer's dimensions
        attention = [m for m in encoder.modules() if hasattr(m, "num_points")]
        assert attention and all(m.num_points == 2 for m in attention)
    cfg.model.transformer.encoder.name = "sparse"
    assert instantiate(cfg.model.transformer.encoder).keep_ratio == 0.2
    cfg.model.transformer.encoder.name = "focus"
    assert instantiate(cfg.model.transformer.encoder).selector.keep_ratio == 0.2


def test_bad_choices_are_named():
    with pytest.raises(ValueError, match="unknown encoder 'sprase'"):
        instantiate(tiny_cfg("model.transformer.encoder.name=sprase").model.transformer.encoder)
    # a Focus cascade of the wrong length for the configured depth
    cfg = tiny_cfg("model.transformer.encoder.name=focus", "model.transformer.encoder.num_layers=3")
    with pytest.raises(ValueError, match="has 2 layers but the config asks for 3"):
        instantiate(cfg.model.transformer.encoder)
    with pytest.raises(TypeError, match="not a module"):
        build_encoder("x", {"x": {"_target_": "builtins.dict"}})


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_train_and_infer_with_each_encoder(models, name):
    model = models[name]
    model.train()
    batch = make_batch([(96, 128), (64, 96)], [2, 1], CLASSES, seed=1)
    losses = model(batch)
    encoder_losses = {k for k in losses if k in set().union(*ENCODER_LOSSES.values())}
    assert encoder_losses == ENCODER_LOSSES[name]  # attached automatically, no more, no less
    total = sum(losses.values())
    assert torch.isfinite(total)
    model.zero_grad()
    total.backward()
    grads = {k: p.grad for k, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values() if g is not None)
    scorer = [k for k in grads if "score_network" in k]
    if name == "dense":
        assert not scorer
    else:  # the token scorer learns from the encoder's own loss
        assert scorer and all(grads[k] is not None and grads[k].abs().sum() > 0 for k in scorer)
    assert grads["transformer.decoder.class_embed.0.weight"].abs().sum() > 0
    assert grads["backbone.stem.conv1.weight"].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        results = model(batch)
    assert len(results) == 2 and len(results[0]["instances"]) == 20


def test_r50_config_is_dino_r50_with_a_sparse_encoder():
    cfg = LazyConfig.load(R50)
    assert cfg.model.transformer.encoder.name == "sparse"
    assert cfg.model.transformer.encoder.keep_ratio == 0.3
    assert cfg.train.max_iter == 270000
    torch.manual_seed(0)
    sparse = instantiate(cfg.model)
    assert isinstance(sparse.transformer.encoder, SparseDetrEncoder)
    assert sparse.transformer.encoder.num_layers == 6
    assert sparse.transformer.encoder.num_aux_layers == 5
    dino = instantiate(LazyConfig.load(DINO_R50_MODEL).model)
    assert outside_encoder(sparse) == outside_encoder(dino)
    # the sparse encoder's layers are the DINO encoder's layers (same names and shapes)
    layers = {
        k: tuple(v.shape)
        for k, v in sparse.state_dict().items()
        if k.startswith("transformer.encoder.layers.")
    }
    assert layers == {
        k: tuple(v.shape)
        for k, v in dino.state_dict().items()
        if k.startswith("transformer.encoder.layers.")
    }


def test_sparse_encoder_trains_on_images_without_objects(models):
    model = models["sparse"]
    model.train()
    losses = model(make_batch([(64, 96), (96, 64)], [0, 0], CLASSES, seed=2))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "swap_config, focus_model",
    [
        (TINY, "projects/focus_detr/configs/models/focus_detr_tiny.py"),
        (R50, "projects/focus_detr/configs/models/focus_detr_r50.py"),
    ],
)
def test_focus_choice_is_the_focus_projects_encoder(swap_config, focus_model):
    """Swapping to `focus` gives the Focus-DETR project's own encoder (names, shapes and
    hyperparameters), so the comparison is against the real thing."""
    cfg = apply_overrides(LazyConfig.load(swap_config), ["model.transformer.encoder.name=focus"])
    ours = instantiate(cfg.model.transformer.encoder)
    theirs = instantiate(LazyConfig.load(str(REPO_ROOT / focus_model)).model.transformer.encoder)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    for a, b in ((ours.selector, theirs.selector), (ours.layers[0], theirs.layers[0])):
        for attr in (
            "keep_ratio",
            "modulation",
            "modulation_target",
            "num_object_tokens",
            "object_score",
        ):
            assert getattr(a, attr, None) == getattr(b, attr, None), attr
    assert ours.selector.cascade_ratios.tolist() == theirs.selector.cascade_ratios.tolist()
    assert ours.foreground_loss.weight == theirs.foreground_loss.weight
    assert (
        ours.foreground_loss.assigner.scale_ranges == theirs.foreground_loss.assigner.scale_ranges
    )


def test_sparse_auxiliary_boxes_use_the_transformers_proposals():
    """The auxiliary box heads regress from the transformer's own proposals: with a non-default
    `proposal_base_size` their zero-initialized output is each kept token's proposal box with
    that size, computed here by hand from the padding mask."""
    base = 0.1
    model = build(
        "model.transformer.encoder.name=sparse", f"model.transformer.proposal_base_size={base}"
    )
    model.train()
    batch = make_batch([(96, 128), (64, 96)], [2, 1], CLASSES, seed=1)
    with torch.no_grad():
        out = model.compute_outputs(model.preprocess_image(batch))
    inputs, encoded = out["encoder_inputs"], out["encoder_output"]
    index, valid = encoded.selection.kept_index[0], encoded.selection.kept_valid[0]
    boxes = encoded.extras["aux_boxes"][0]
    shapes = inputs.spatial_shapes.tolist()
    starts = inputs.level_start_index.tolist()
    checked = 0
    for b in range(index.shape[0]):
        for slot in valid[b].nonzero()[:, 0].tolist():
            token = int(index[b, slot])
            level = max(i for i, s in enumerate(starts) if s <= token)
            h, w = shapes[level]
            mask = inputs.padding_mask[b, starts[level] : starts[level] + h * w].view(h, w)
            vh, vw = int((~mask[:, 0]).sum()), int((~mask[0]).sum())
            row, col = divmod(token - starts[level], w)
            size = base * 2**level
            box = torch.tensor([(col + 0.5) / vw, (row + 0.5) / vh, size, size])
            if ((box > 0.01) & (box < 0.99)).all():
                torch.testing.assert_close(boxes[b, slot], box.to(boxes))
                checked += 1
            else:  # out-of-range proposals are +inf, as in two-stage DINO
                assert torch.equal(boxes[b, slot], torch.ones_like(boxes[b, slot]))
    assert checked > 0
