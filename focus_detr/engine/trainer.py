"""The training loop step: forward, backward, gradient clipping, optimizer step (AMP on CUDA)."""

import time

import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils.events import get_event_storage

__all__ = ["DetrTrainer"]


class DetrTrainer(SimpleTrainer):
    """detectron2's `SimpleTrainer` with gradient clipping and optional CUDA mixed precision.

    The gradient is clipped after backward and before `optimizer.step()` (with AMP, after
    unscaling), and its total norm before clipping is logged as "grad_norm".

    Args:
        model: returns a dict of losses in training mode.
        data_loader: iterable of batches.
        optimizer: torch optimizer.
        amp: use `torch.autocast` + `GradScaler` (CUDA only; an error elsewhere).
        clip_grad_params: dict(max_norm=..., norm_type=...) or None for no clipping.
    """

    def __init__(self, model, data_loader, optimizer, amp=False, clip_grad_params=None):
        super().__init__(model, data_loader, optimizer)
        self.amp = bool(amp)
        if self.amp:
            if not torch.cuda.is_available():
                raise RuntimeError("train.amp.enabled=True needs CUDA; set it to False on CPU")
            self.grad_scaler = torch.amp.GradScaler("cuda")
        self.clip_grad_params = dict(clip_grad_params) if clip_grad_params else None

    def run_step(self):
        assert self.model.training, "[DetrTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast("cuda", enabled=self.amp):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            losses, loss_dict = loss_dict, {"total_loss": loss_dict}
        else:
            losses = sum(loss_dict.values())

        self.optimizer.zero_grad(set_to_none=True)
        if self.amp:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        self._write_metrics(loss_dict, data_time)
        if self.clip_grad_params is not None:
            if self.amp:
                self.grad_scaler.unscale_(self.optimizer)
            params = [
                p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None
            ]
            norm = torch.nn.utils.clip_grad_norm_(params, **self.clip_grad_params)
            get_event_storage().put_scalar("grad_norm", float(norm), smoothing_hint=True)
        if self.amp:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self):
        ret = super().state_dict()
        if self.amp:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.amp and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
