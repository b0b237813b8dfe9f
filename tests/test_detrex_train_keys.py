"""Our configs carry every `train.*` key detrex's tools/train_net.py reads (so they run under it),
and our train_net honours `train.fast_dev_run` and `train.wandb`."""

import json
import sys
from pathlib import Path

import pytest
from detectron2.config import LazyConfig
from detectron2.utils.events import EventStorage
from omegaconf import OmegaConf

from conftest import TOY_CONFIG, run_train_net
from focus_detr.engine.train_options import WandbWriter, apply_fast_dev_run, wandb_writers

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(REPO)) for p in REPO.glob("projects/*/configs/*.py"))
# what detrex e244e6c's tools/train_net.py reads from a config (read from its source)
DETREX_TRAIN_NET_KEYS = (
    "model",
    "optimizer",
    "lr_multiplier",
    "dataloader.train",
    "dataloader.test",
    "dataloader.evaluator",
    "train.output_dir",
    "train.init_checkpoint",
    "train.max_iter",
    "train.device",
    "train.ddp",
    "train.amp.enabled",
    "train.clip_grad.enabled",
    "train.clip_grad.params",
    "train.checkpointer",
    "train.eval_period",
    "train.log_period",
    "train.fast_dev_run.enabled",
    "train.wandb.enabled",
    "train.wandb.params.dir",
    "train.wandb.params.project",
    "train.wandb.params.name",
    "train.model_ema.enabled",
    "train.model_ema.decay",
    "train.model_ema.device",
    "train.model_ema.use_ema_weights_for_eval_only",
)


@pytest.mark.parametrize("config", CONFIGS)
def test_config_has_every_key_detrex_train_net_reads(config):
    cfg = LazyConfig.load(str(REPO / config))
    missing = [
        k
        for k in DETREX_TRAIN_NET_KEYS
        if OmegaConf.select(cfg, k, default="<missing>") == "<missing>"
    ]
    assert not missing, f"{config} lacks {missing}"


def test_fast_dev_run_sets_the_smoke_test_lengths():
    cfg = LazyConfig.load(str(TOY_CONFIG))
    cfg.train.max_iter = 1000
    assert apply_fast_dev_run(cfg).train.max_iter == 1000  # off by default
    cfg.train.fast_dev_run.enabled = True
    apply_fast_dev_run(cfg)
    assert (cfg.train.max_iter, cfg.train.eval_period, cfg.train.log_period) == (20, 10, 1)


def test_train_net_fast_dev_run_stops_after_its_iterations(tmp_path, synthetic_splits):
    run_train_net(
        "--config-file",
        TOY_CONFIG,
        f"train.output_dir={tmp_path}",
        "train.max_iter=1000",
        "train.fast_dev_run.enabled=True",
        "train.fast_dev_run.max_iter=3",
        "train.fast_dev_run.eval_period=0",
    )
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    # iterations 0..2, each logged (log_period 1), not the 1000 of train.max_iter
    assert {m["iteration"] for m in metrics if "total_loss" in m} == {0, 1, 2}


def test_wandb_without_the_package_is_a_clear_error(monkeypatch):
    cfg = LazyConfig.load(str(TOY_CONFIG))
    assert wandb_writers(cfg) == []
    cfg.train.wandb.enabled = True
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"train\.wandb\.enabled=True needs the wandb package"):
        wandb_writers(cfg)


def test_wandb_writer_logs_the_latest_scalars_once(monkeypatch, tmp_path):
    class FakeRun:
        def __init__(self, **params):
            self.params, self.logged, self.finished = params, [], False

        def log(self, values, step):
            self.logged.append((step, dict(values)))

        def finish(self):
            self.finished = True

    class FakeWandb:
        @staticmethod
        def init(**params):
            return FakeRun(**params)

    monkeypatch.setitem(sys.modules, "wandb", FakeWandb)
    cfg = LazyConfig.load(str(TOY_CONFIG))
    cfg.train.wandb.enabled = True
    cfg.train.wandb.params.dir = str(tmp_path / "wandb")
    (writer,) = wandb_writers(cfg)
    assert isinstance(writer, WandbWriter) and (tmp_path / "wandb").is_dir()
    run = writer._run
    assert run.params == {
        "dir": str(tmp_path / "wandb"),
        "project": "focus_detr",
        "name": "focus_detr_experiment",
    }
    with EventStorage(start_iter=0) as storage:
        storage.put_scalar("total_loss", 2.0, smoothing_hint=False)
        writer.write()
        writer.write()  # nothing new: nothing logged
        storage.iter = 1
        storage.put_scalar("total_loss", 1.0, smoothing_hint=False)
        writer.write()
    writer.close()
    assert run.logged == [(0, {"total_loss": 2.0}), (1, {"total_loss": 1.0})] and run.finished
