"""Training never applies or checkpoints non-finite weights, and stops naming the cause."""

import os

import pytest
import torch
from detectron2.engine import hooks
from detectron2.utils.events import EventStorage
from torch import nn

from focus_detr.engine import DetrTrainer, SafeDetectionCheckpointer


class _InfiniteDerivative(nn.Module):
    """loss = sum(sqrt(|w * 0|)) + sum((w - 1)^2): finite (the first term is 0), but the
    derivative of sqrt at 0 is infinite and times 0 gives NaN gradients."""

    def __init__(self):
        super().__init__()
        self.ok = nn.Parameter(torch.zeros(2))
        self.w = nn.Parameter(torch.full((3,), 2.0))

    def forward(self, batch):
        loss = torch.sqrt((self.w * 0).abs()).sum() + ((self.w - 1) ** 2).sum()
        return {"loss": loss + (self.ok**2).sum()}


@pytest.mark.parametrize("clip", [{"max_norm": 0.1, "norm_type": 2}, None])
def test_non_finite_gradient_stops_before_the_step_and_nothing_is_checkpointed(tmp_path, clip):
    model = _InfiniteDerivative()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = DetrTrainer(model, [None] * 10, opt, clip_grad_params=clip)
    checkpointer = SafeDetectionCheckpointer(model, str(tmp_path), trainer=trainer)
    trainer.register_hooks([hooks.PeriodicCheckpointer(checkpointer, period=1)])
    with pytest.raises(
        FloatingPointError, match=r"non-finite gradient.* at iteration 0, first in parameter 'w'"
    ):
        trainer.train(0, 5)
    for k, v in model.state_dict().items():  # the step was not applied
        assert torch.equal(v, before[k]), k
    assert not any(f.endswith(".pth") for f in os.listdir(tmp_path))
    assert not (tmp_path / "last_checkpoint").exists()


def test_checkpointer_refuses_non_finite_weights_and_keeps_the_last_tag(tmp_path):
    model = nn.Linear(2, 2)
    checkpointer = SafeDetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000004", iteration=4)
    with torch.no_grad():
        model.bias[1] = float("nan")
    with pytest.raises(FloatingPointError, match=r"model_0000009.*'bias' holds non-finite"):
        checkpointer.save("model_0000009", iteration=9)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"


def test_checkpointer_refuses_non_finite_ema_weights(tmp_path):
    from focus_detr.engine import ModelEMA

    model = nn.Linear(2, 2)
    ema = ModelEMA(model, decay=0.9)
    ema.state["weight"][0, 0] = float("inf")
    checkpointer = SafeDetectionCheckpointer(model, str(tmp_path), ema=ema)
    with pytest.raises(FloatingPointError, match=r"EMA weights .*'weight' holds non-finite"):
        checkpointer.save("model_final")
    assert os.listdir(tmp_path) == []


def test_finite_training_is_unchanged():
    """A normal step still applies (the check only stops non-finite gradients)."""
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    class _Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, batch):
            return {"loss": self.m(torch.ones(1, 2)).pow(2).sum() + 1.0}

    wrapped = _Wrap()
    before = model.weight.detach().clone()
    trainer = DetrTrainer(wrapped, [None] * 2, opt, clip_grad_params={"max_norm": 1.0})
    with EventStorage(0):
        trainer.iter = 0
        trainer.run_step()
    assert not torch.equal(model.weight, before)


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "train.max_iter=abc",
            r"config key 'train.max_iter': value 'abc' has type str, expected type int "
            r"\(default 90000\)",
        ),
        (
            "train.checkpointer.period=abc",
            r"'train.checkpointer.period': value 'abc' has type str, "
            r"expected type int",
        ),
        ("train.max_iter=1.5", r"'train.max_iter': value 1.5 has type float, expected type int"),
        ("train.amp.enabled=1", r"'train.amp.enabled': value 1 has type int, expected type bool"),
        ("optimizer.lr=fast", r"'optimizer.lr': value 'fast' has type str, expected type float"),
        (
            "train.clip_grad.params=3",
            r"'train.clip_grad.params': value 3 has type int, expected type dict",
        ),
        ("model.bias=maybe", r"'model.bias': value 'maybe' has type str, expected type bool"),
    ],
)
def test_override_of_another_type_is_refused_at_load_time(override, message):
    from test_train_net_engine import _cfg

    from focus_detr.engine import apply_overrides

    with pytest.raises(TypeError, match=message):
        apply_overrides(_cfg(), [override])


def test_overrides_of_compatible_types_are_accepted():
    from test_train_net_engine import _cfg

    from focus_detr.engine import apply_overrides

    cfg = apply_overrides(
        _cfg(),
        [
            "optimizer.lr=1",
            "train.output_dir=2024",
            "train.init_checkpoint=null",
            "train.seed=${train.max_iter}",
            "train.max_iter=7",
        ],
    )
    assert cfg.optimizer.lr == 1 and cfg.train.output_dir == "2024"
    assert cfg.train.init_checkpoint is None and cfg.train.seed == 7


def test_train_net_refuses_a_wrongly_typed_value_before_building(tmp_path):
    from conftest import TOY_CONFIG, run_train_net

    proc = run_train_net(
        "--config-file",
        TOY_CONFIG,
        f"train.output_dir={tmp_path}",
        "train.max_iter=abc",
        check=False,
    )
    assert proc.returncode != 0
    assert "config key 'train.max_iter': value 'abc' has type str, expected type int" in proc.stdout
    assert "Model:" not in proc.stdout and not (tmp_path / "last_checkpoint").exists()


def test_image_too_small_for_the_backbone_in_training_is_named_before_the_backbone():
    """A single 16x16 image in training used to fail in a norm layer of the backbone ("Expected
    more than 1 value per channel"); it gets inference's query-budget error instead."""
    from dino_utils import make_batch, tiny_model

    model = tiny_model(num_classes=5).train()
    with pytest.raises(
        ValueError,
        match=r"image 0 of the batch is too small for the query "
        r"budget: 7 tokens \(levels HxW 2x2, 1x1, 1x1, 1x1\)",
    ):
        model(make_batch([(16, 16)], [1], 5))


def test_the_early_size_check_predicts_the_transformers_level_sizes(monkeypatch):
    """The check before the backbone sees the same valid sizes as the transformer's own check,
    so it never refuses an image that the transformer would accept."""
    from dino_utils import make_batch, tiny_model

    model = tiny_model(num_classes=5).train()
    seen = []
    monkeypatch.setattr(
        model.transformer, "check_query_budget", lambda sizes, num_tokens=None: seen.append(sizes)
    )
    for sizes in ([(96, 128)], [(96, 128), (50, 37)], [(61, 77), (33, 129), (80, 80)]):
        seen.clear()
        model(make_batch(sizes, [1] * len(sizes), 5))
        assert len(seen) == 2 and torch.equal(seen[0], seen[1]), sizes


class _Other(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2, 2))
        self.bias = nn.Parameter(torch.zeros(2))


def test_resume_refuses_another_models_checkpoint_before_loading(tmp_path):
    from focus_detr.engine.checkpoint import model_identity
    from focus_detr.modeling import CheckpointMismatchError

    trained = nn.Linear(2, 2)
    SafeDetectionCheckpointer(
        trained, str(tmp_path), model_info=model_identity(trained, "a.py")
    ).save("model_0000004")
    # same keys and shapes, another class: refused by the recorded class
    other = _Other()
    ckpt = SafeDetectionCheckpointer(other, str(tmp_path), model_info=model_identity(other, "b.py"))
    with pytest.raises(
        CheckpointMismatchError,
        match=(
            r"model_0000004.pth is of another model than this run: the checkpoint holds "
            r"torch.nn.modules.linear.Linear \(config .*a.py\), this run builds "
            r".*_Other \(config .*b.py\)\. Nothing was loaded"
        ),
    ):
        ckpt.check_resume_fits()
    assert torch.equal(other.weight, torch.zeros(2, 2))
    # same class, other shapes (e.g. another num_classes): refused by the weights
    wider = nn.Linear(2, 3)
    ckpt = SafeDetectionCheckpointer(wider, str(tmp_path), model_info=model_identity(wider, "a.py"))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"weights differ: 2 shape mismatches "
        r"\(weight: checkpoint \(2, 2\), model "
        r"\(3, 2\)",
    ):
        ckpt.check_resume_fits()
    # the same model resumes
    same = nn.Linear(2, 2)
    SafeDetectionCheckpointer(
        same, str(tmp_path), model_info=model_identity(same, "a.py")
    ).check_resume_fits()


def test_train_net_resume_with_another_models_config_stops(tmp_path):
    from conftest import TOY_CONFIG, run_train_net

    common = [
        "--config-file",
        TOY_CONFIG,
        f"train.output_dir={tmp_path}",
        "train.max_iter=1",
        "train.checkpointer.period=1",
        "dataloader.train.total_batch_size=2",
    ]
    run_train_net(*common)
    proc = run_train_net("--resume", *common, "train.max_iter=2", "model.channels=8", check=False)
    assert proc.returncode != 0
    assert "--resume: the last checkpoint" in proc.stdout and "is of another model" in proc.stdout
    assert "tests.toy_model.ToyDetector (config" in proc.stdout
    assert "weights differ" in proc.stdout
    assert "Starting training" not in proc.stdout
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


def test_run_config_history_paths(tmp_path):
    from focus_detr.engine.run_dir import run_config_path

    assert run_config_path(str(tmp_path), "train") == str(tmp_path / "config.yaml")
    (tmp_path / "config.yaml").write_text("first training")
    t = 1_700_000_000
    assert run_config_path(str(tmp_path), "eval", now=t) == str(
        tmp_path / "config_eval_20231114-221320.yaml"
    )
    assert run_config_path(str(tmp_path), "train", now=t).endswith(
        "config_train_20231114-221320.yaml"
    )
    (tmp_path / "config_resume_20231114-221320.yaml").write_text("")
    assert run_config_path(str(tmp_path), "resume", now=t).endswith("-221320-1.yaml")


def test_training_config_is_kept_by_later_runs(tmp_path):
    """An eval-only run with other settings, and a run that fails at once, in a training run's
    directory leave its config.yaml as it was; the evaluation keeps its own config."""
    from conftest import TOY_CONFIG, run_train_net

    common = ["--config-file", TOY_CONFIG, f"train.output_dir={tmp_path}"]
    run_train_net(*common, "train.max_iter=1", "dataloader.train.total_batch_size=2")
    training = (tmp_path / "config.yaml").read_text()
    assert "max_iter: 1" in training
    run_train_net(
        "--eval-only",
        *common,
        "train.max_iter=77",
        f"train.init_checkpoint={tmp_path / 'model_final.pth'}",
    )
    failed = run_train_net("--resume", *common, "train.max_iter=abc", check=False)
    assert failed.returncode != 0
    assert (tmp_path / "config.yaml").read_text() == training
    evals = sorted(tmp_path.glob("config_eval_*.yaml"))
    assert len(evals) == 1 and "max_iter: 77" in evals[0].read_text()
    assert not list(tmp_path.glob("config_resume_*"))  # the failed run wrote nothing


def test_drop_metrics_from_keeps_earlier_iterations_only(tmp_path):
    from focus_detr.engine.run_dir import drop_metrics_from

    path = tmp_path / "metrics.json"
    path.write_text(
        '{"iteration": 1, "loss": 2}\n{"iteration": 3}\n{"iteration": 4}\n{"iteration": 5, "lo'
    )  # the last line cut by a kill
    assert drop_metrics_from(str(path), 4) == 2
    assert path.read_text() == '{"iteration": 1, "loss": 2}\n{"iteration": 3}\n'
    assert drop_metrics_from(str(path), 4) == 0
    assert drop_metrics_from(str(tmp_path / "none.json"), 4) == 0


def test_resumed_run_records_each_iteration_once(tmp_path):
    import json

    from conftest import TOY_CONFIG, run_train_net

    common = [
        "--config-file",
        TOY_CONFIG,
        f"train.output_dir={tmp_path}",
        "train.checkpointer.period=2",
        "train.log_period=1",
        "dataloader.train.total_batch_size=2",
    ]
    crashed = run_train_net(*common, "model.crash_after_steps=5", check=False)
    assert crashed.returncode != 0
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    before = [
        json.loads(x)["iteration"] for x in (tmp_path / "metrics.json").read_text().splitlines()
    ]
    assert 4 in before  # logged by the dead run after its last checkpoint
    run_train_net("--resume", *common)
    records = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    losses = [r["iteration"] for r in records if "total_loss" in r]
    assert losses == [0, 1, 2, 3, 4, 5]
