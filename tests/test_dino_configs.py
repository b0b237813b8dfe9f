"""The DINO configs load and say what their names promise."""

import pytest
from detectron2.config import LazyConfig, instantiate

from focus_detr.engine import REPO_ROOT

CONFIGS = REPO_ROOT / "projects/dino/configs"


def load(name):
    return LazyConfig.load(str(CONFIGS / f"{name}.py"))


@pytest.mark.parametrize(
    "name,max_iter,decay,temperature,offset",
    [
        ("dino_r50_4scale_12ep", 90000, 82500, 10000, -0.5),
        ("dino_r50_4scale_24ep", 180000, 150000, 20, 0.0),
        ("dino_r50_4scale_36ep", 270000, 150000, 20, 0.0),
        ("dino_r101_4scale_12ep", 90000, 82500, 10000, -0.5),
    ],
)
def test_coco_configs(name, max_iter, decay, temperature, offset):
    cfg = load(name)
    for key in ("model", "dataloader", "optimizer", "lr_multiplier", "train"):
        assert key in cfg
    assert cfg.train.max_iter == max_iter
    assert cfg.lr_multiplier.scheduler.milestones == [decay, max_iter]
    assert cfg.model.position_embedding.temperature == temperature
    assert cfg.model.position_embedding.offset == offset
    assert cfg.model.backbone.stages.depth == (101 if "r101" in name else 50)
    assert cfg.train.clip_grad.params.max_norm == 0.1
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.weight_decay == 1e-4
    assert cfg.optimizer.params.lr_factor_func.factor == 0.1
    assert cfg.dataloader.train.total_batch_size == 16
    assert cfg.model.transformer.num_queries == 900 and cfg.model.denoising.num_dn_queries == 100
    assert cfg.dataloader.evaluator.output_dir == cfg.train.output_dir
    assert name in cfg.train.output_dir


def test_r101_backbone_depth():
    backbone = instantiate(load("dino_r101_4scale_12ep").model.backbone)
    assert len(backbone.res4) == 23 and backbone.res5[0].conv3.out_channels == 2048


def test_tiny_config_model():
    cfg = load("dino_tiny_synthetic")
    assert cfg.dataloader.train.dataset.names == "synthetic_shapes_train"
    assert cfg.train.device == "cpu"
    model = instantiate(cfg.model)
    t = model.transformer
    assert (t.embed_dim, len(t.encoder.layers), len(t.decoder.layers)) == (64, 2, 3)
    assert t.num_queries == 100 and model.num_classes == 6 and model.denoising.num_classes == 6
    assert sum(p.numel() for p in model.parameters()) < 5e6
