"""Units behind tools/train_net.py: clipping trainer, EMA, optimizer groups, schedules,
strict overrides, checkpoints, torchrun process groups."""

import os

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from torch import nn

from conftest import REPO_ROOT
from focus_detr.engine import (
    DetrTrainer,
    LRSchedulerHook,
    ModelEMA,
    SafeDetectionCheckpointer,
    apply_overrides,
    epoch_schedule,
    get_config,
    get_default_optimizer_params,
    has_compiled_detectron2_ops,
    init_torchrun_process_group,
    iters_for_epochs,
    keyword_lr_factor,
    multistep_schedule,
    safe_load_checkpoint,
)


class _Regression(nn.Module):
    """loss = sum((x @ w - y)^2) on a fixed batch: gradients known in closed form."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, batch):
        x, y = batch
        return {"loss": ((x @ self.w - y) ** 2).sum()}


def _one_step(clip):
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    w0 = torch.randn(3, dtype=torch.float64)
    model = _Regression(w0)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = DetrTrainer(model, [(x, y)] * 2, opt, clip_grad_params=clip)
    with EventStorage(0) as storage:
        trainer.iter = 0
        trainer.run_step()
    grad = 2 * x.T @ (x @ w0 - y)  # d/dw sum((xw - y)^2)
    return w0, grad, model.w.detach(), storage


def test_gradient_clipping_before_the_step():
    w0, grad, w1, storage = _one_step({"max_norm": 0.1, "norm_type": 2})
    assert grad.norm() > 0.1
    torch.testing.assert_close(w1, w0 - grad * (0.1 / grad.norm()), rtol=1e-5, atol=1e-9)
    assert storage.history("grad_norm").latest() == pytest.approx(float(grad.norm()))


def test_no_clipping_without_params():
    w0, grad, w1, _ = _one_step(None)
    torch.testing.assert_close(w1, w0 - grad)


def test_amp_requires_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="needs CUDA"):
        DetrTrainer(
            _Regression(torch.zeros(3)),
            [],
            torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1),
            amp=True,
        )


def test_ema_matches_the_recursion_in_float64():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    ema = ModelEMA(model, decay=0.9, warmup=True)
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].num_batches_tracked += 3
        d = min(0.9, (1 + n) / (10 + n))
        for k, v in model.state_dict().items():
            ref[k] = d * ref[k] + (1 - d) * v if v.is_floating_point() else v.clone()
        ema.update(model)
    for k in ref:
        torch.testing.assert_close(ema.state[k], ref[k], rtol=1e-12, atol=1e-12)
    assert ema.state["1.num_batches_tracked"].item() == 15  # integer buffers are copied


def test_ema_apply_to_restores_weights_even_on_error():
    model = nn.Linear(2, 2)
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    trained = model.weight.detach().clone()
    with pytest.raises(ValueError):
        with ema.apply_to(model):
            torch.testing.assert_close(model.weight, trained - 1.0)
            raise ValueError
    torch.testing.assert_close(model.weight, trained)


def test_ema_reset_restarts_from_the_current_weights():
    model = nn.Linear(2, 2)
    ema = ModelEMA(model, decay=0.9)
    ema.update(model)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.reset(model)
    assert ema.num_updates == 0 and torch.equal(ema.state["weight"], model.weight)


def test_ema_state_round_trip():
    model = nn.Linear(2, 2)
    a = ModelEMA(model, decay=0.99)
    a.update(model)
    b = ModelEMA(nn.Linear(2, 2), decay=0.99)
    b.load_state_dict(a.state_dict())
    assert b.num_updates == 1 and all(torch.equal(a.state[k], b.state[k]) for k in a.state)


class _Det(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4))
        self.head = nn.Linear(4, 2)


def test_backbone_lr_factor_and_no_decay_on_norms():
    model = _Det()
    groups = get_default_optimizer_params(
        model,
        base_lr=1e-4,
        weight_decay=1e-4,
        weight_decay_norm=0.0,
        lr_factor_func=keyword_lr_factor("backbone", 0.1),
    )
    by_param = {id(p): g for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        g = by_param[id(p)]
        assert g["lr"] == pytest.approx(1e-5 if name.startswith("backbone") else 1e-4), name
        assert g.get("weight_decay", 1e-4) == (0.0 if name.startswith("backbone.1") else 1e-4)


def test_common_optimizer_config_builds_adamw():
    cfg = get_config("common/optim.py").AdamW
    model = _Det()
    cfg.params.model = model
    opt = instantiate(cfg)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["weight_decay"] == 1e-4
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == pytest.approx([1e-5, 1e-4])


@pytest.mark.parametrize(
    "name,total,decay",
    [
        ("lr_multiplier_12ep", 90000, 82500),
        ("lr_multiplier_24ep", 180000, 150000),
        ("lr_multiplier_36ep", 270000, 150000),
    ],
)
def test_coco_schedules(name, total, decay):
    sched = instantiate(get_config("common/schedules.py")[name])
    assert sched(0.0) == 1.0
    assert sched((decay - 1) / total) == 1.0
    assert sched(decay / total) == pytest.approx(0.1)
    assert sched((total - 1) / total) == pytest.approx(0.1)


def test_epoch_schedule_for_any_dataset():
    assert iters_for_epochs(1600, 8, 12) == 2400
    assert iters_for_epochs(1601, 8, 1) == 201
    lr, max_iter = epoch_schedule(1600, 8, 12, 11, warmup_iters=100)
    sched = instantiate(lr)
    assert max_iter == 2400
    assert sched(0.0) == pytest.approx(0.001)  # linear warm-up from 0.001
    assert sched(100 / 2400) == 1.0
    assert sched(2199 / 2400) == 1.0 and sched(2200 / 2400) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="decay iterations"):
        multistep_schedule(100, 100)


def _cfg():
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / "common" / "train.py"))
    cfg.optimizer = get_config("common/optim.py").AdamW
    cfg.model = L(nn.Linear)(in_features=2, out_features=3)
    return cfg


def test_overrides_known_keys_and_lazycall_arguments():
    cfg = apply_overrides(
        _cfg(),
        [
            "train.max_iter=7",
            "optimizer.lr=3e-4",
            "model.bias=False",
            "optimizer.params.lr_factor_func.factor=0.5",
            "+train.extra=1",
            "train.amp.enabled=true",
        ],
    )
    assert cfg.train.max_iter == 7 and cfg.optimizer.lr == 3e-4 and cfg.model.bias is False
    assert cfg.optimizer.params.lr_factor_func.factor == 0.5 and cfg.train.extra == 1
    assert cfg.train.amp.enabled is True


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.max_iters=1", "unknown config key 'train.max_iters'.*did you mean 'max_iter'"),
        ("model.biass=1", "'model' has no key 'biass'.*did you mean 'bias'"),
        ("train.amp.enabled.x=1", "'train.amp.enabled' is a value"),
        ("nothing=1", "the config has no key 'nothing'"),
    ],
)
def test_overrides_refuse_unknown_keys(override, message):
    with pytest.raises(KeyError, match=message):
        apply_overrides(_cfg(), [override])


def test_options_after_overrides_are_explained():
    with pytest.raises(ValueError, match="options must come before the overrides"):
        apply_overrides(_cfg(), ["train.max_iter=1", "--resume"])


def test_checkpoints_save_atomically_and_load_weights_only(tmp_path):
    model = nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()

    hook = LRSchedulerHook(optimizer=opt, scheduler=instantiate(multistep_schedule(10, 5)))

    class _T:  # the attributes LRScheduler.before_train reads
        max_iter, iter, optimizer = 10, 0, opt

    hook.trainer = _T()
    hook.before_train()
    ckpt = SafeDetectionCheckpointer(model, str(tmp_path), optimizer=opt)
    ckpt.save("model_0000004", iteration=4, hooks={"LRSchedulerHook": hook.state_dict()})
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]
    raw = torch.load(tmp_path / "model_0000004.pth", weights_only=True)  # plain torch works
    assert raw["iteration"] == 4 and "last_epoch" in raw["hooks"]["LRSchedulerHook"]
    other = nn.Linear(2, 2)
    SafeDetectionCheckpointer(other, str(tmp_path)).resume_or_load("", resume=True)
    assert torch.equal(other.weight, model.weight)
    assert safe_load_checkpoint(str(tmp_path / "model_0000004.pth"))["iteration"] == 4


def test_our_detectron2_build_reports_no_compiled_ops():
    import detectron2

    ours = os.path.exists(
        os.path.join(os.path.dirname(detectron2.__file__), "_focus_detr_patched.txt")
    )
    if not ours:
        pytest.skip("a detectron2 build that is not ours")
    assert has_compiled_detectron2_ops() is False
    cfg = get_config("common/data/synthetic.py")
    assert cfg.dataloader.evaluator.use_fast_impl is False


def test_torchrun_environment_sets_up_detectron2_comm(monkeypatch):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(comm, "_LOCAL_PROCESS_GROUP", None)
    try:
        assert init_torchrun_process_group("cpu") == "gloo"
        assert dist.get_backend() == "gloo"
        assert comm._LOCAL_PROCESS_GROUP is not None
        assert (comm.get_rank(), comm.get_world_size()) == (0, 1)
        assert (comm.get_local_rank(), comm.get_local_size()) == (0, 1)
        assert comm.all_gather({"x": 1}) == [{"x": 1}]
    finally:
        dist.destroy_process_group()
