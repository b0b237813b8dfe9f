"""FocusDETR end to end on a tiny random model: losses (with `select_loss`) in training, outputs
in inference, both config systems, the encoder type check."""

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from focus_detr.modeling import instantiate_model
from focus_detr.engine import REPO_ROOT
from focus_detr.modeling import FocusDETR, add_focus_detr_config
from focus_detr.modeling.focus import FocusEncoder, foreground_focal_loss

from dino_utils import make_batch

TINY = str(REPO_ROOT / "projects/focus_detr/configs/models/focus_detr_tiny.py")
R50 = str(REPO_ROOT / "projects/focus_detr/configs/models/focus_detr_r50.py")
K = 5


def tiny_cfg():
    cfg = LazyConfig.load(TINY)
    cfg.model.num_classes = K
    cfg.model.transformer.num_queries = 30
    cfg.model.denoising.num_dn_queries = 8
    cfg.model.select_box_nums_for_evaluation = 20
    return cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return instantiate_model(tiny_cfg().model)


def test_training_losses_include_the_weighted_select_loss(model):
    model.train()
    batch = make_batch([(96, 128), (64, 100)], [3, 1], K)
    torch.manual_seed(0)
    losses = model(batch)
    assert "select_loss" in losses and all(torch.isfinite(v) for v in losses.values())
    # the loss is the weighted focal loss of the selector's logits against the assigned labels
    torch.manual_seed(0)
    targets = model.prepare_targets(batch)
    out = model.compute_outputs(model.preprocess_image(batch), targets)
    foreground = model.transformer.encoder.foreground_loss
    selection = out["encoder_output"].selection
    labels = foreground.labels(
        [t["boxes_xyxy"] for t in targets], selection.spatial_shapes, selection.padding_mask
    )
    assert labels.any()
    expected = 1.5 * foreground_focal_loss(selection.scores, labels, selection.padding_mask)
    assert torch.allclose(losses["select_loss"], expected)
    sum(losses.values()).backward()
    score_grad = model.transformer.encoder.selector.score_network.layer2[4].weight.grad
    assert score_grad is not None and score_grad.abs().sum() > 0
    model.zero_grad()


def test_inference_outputs(model):
    model.eval()
    batch = make_batch([(96, 128), (64, 100)], [3, 1], K)
    with torch.no_grad():
        results = model(batch)
    assert len(results) == 2
    for r, b in zip(results, batch):
        inst = r["instances"]
        assert len(inst) == 20 and inst.image_size == tuple(b["image"].shape[1:])


def test_focus_detr_requires_a_focus_encoder():
    cfg = tiny_cfg()
    from detectron2.config import LazyCall as L
    from focus_detr.modeling import DeformableEncoder, DeformableEncoderLayer

    cfg.model.transformer.encoder = L(DeformableEncoder)(
        layer=L(DeformableEncoderLayer)(embed_dim=64, num_heads=4, feedforward_dim=256),
        num_layers=1,
    )
    with pytest.raises(TypeError, match="FocusEncoder"):
        instantiate(cfg.model)
    cfg = tiny_cfg()
    cfg.model.transformer.encoder.foreground_loss.assigner.strides = (4, 8, 16, 32)
    with pytest.raises(ValueError, match="strides"):
        instantiate(cfg.model)


def test_yacs_defaults_build_the_lazyconfig_r50_model():
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = add_focus_detr_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert isinstance(model, FocusDETR) and isinstance(model.transformer.encoder, FocusEncoder)
    yacs = {k: v.shape for k, v in model.state_dict().items()}
    lazy = {k: v.shape for k, v in instantiate(LazyConfig.load(R50).model).state_dict().items()}
    assert yacs == lazy
    selector = model.transformer.encoder.selector
    assert selector.keep_ratio == 0.3 and selector.modulation_target == "features"
    assert model.transformer.encoder.layers[0].num_object_tokens == 300
