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
        return {"loss": loss + (self.ok ** 2).sum()}


@pytest.mark.parametrize("clip", [{"max_norm": 0.1, "norm_type": 2}, None])
def test_non_finite_gradient_stops_before_the_step_and_nothing_is_checkpointed(tmp_path, clip):
    model = _InfiniteDerivative()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = DetrTrainer(model, [None] * 10, opt, clip_grad_params=clip)
    checkpointer = SafeDetectionCheckpointer(model, str(tmp_path), trainer=trainer)
    trainer.register_hooks([hooks.PeriodicCheckpointer(checkpointer, period=1)])
    with pytest.raises(FloatingPointError,
                       match=r"non-finite gradient.* at iteration 0, first in parameter 'w'"):
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
