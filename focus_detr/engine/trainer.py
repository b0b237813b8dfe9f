"""The training loop step: forward, backward, gradient clipping, optimizer step (AMP on CUDA)."""

import time

import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils.events import get_event_storage

__all__ = ["DetrTrainer"]


class DetrTrainer(SimpleTrainer):
    """detectron2's `SimpleTrainer` with gradient clipping and optional CUDA mixed precision.

    The gradient is clipped after backward and before `optimizer.step()` (with AMP, after
    unscaling), and its total norm before clipping is logged as "grad_norm". A non-finite
    gradient norm (a finite loss can still have NaN/inf gradients) stops training with a
    `FloatingPointError` before the step is applied, so no non-finite weight is ever trained
    into the model. With AMP, non-finite gradients are the grad scaler's business (it skips
    the step and lowers the scale) and do not stop training.

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
            norm = self._clip_gradients(params)
            get_event_storage().put_scalar("grad_norm", float(norm), smoothing_hint=True)
        elif not self.amp:
            self._check_finite_gradients()
        if self.amp:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def _clip_gradients(self, params):
        """Total norm of the gradients before clipping; clips them in place.

        Without AMP a non-finite norm raises before the gradients are touched (clipping by a
        NaN norm would make every gradient NaN and hide which parameter had one)."""
        utils = torch.nn.utils
        if self.amp or not hasattr(utils, "get_total_norm"):  # torch < 2.6: one fused call
            norm = utils.clip_grad_norm_(params, **self.clip_grad_params)
        else:
            norm_type = self.clip_grad_params.get("norm_type", 2.0)
            norm = utils.get_total_norm([p.grad for p in params], norm_type)
            if bool(torch.isfinite(norm)):
                utils.clip_grads_with_norm_(params, self.clip_grad_params["max_norm"], norm)
        if not self.amp and not bool(torch.isfinite(norm)):
            raise FloatingPointError(
                self._non_finite_gradient_message(f"gradient norm {float(norm)}")
            )
        return norm

    def _first_non_finite_gradient(self):
        """Name of the first parameter (in `named_parameters` order) whose gradient is not
        finite, or None."""
        model = getattr(self.model, "module", self.model)  # DistributedDataParallel's names
        for name, p in model.named_parameters():
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                return name
        return None

    def _non_finite_gradient_message(self, what):
        name = self._first_non_finite_gradient()
        where = f", first in parameter {name!r}" if name else ""
        return (
            f"non-finite {what} at iteration {self.iter}{where} (the loss was "
            "finite); the step was not applied. Lower the learning rate, enable "
            "train.clip_grad, or look for an operation with an infinite derivative "
            "(sqrt/log/division near 0) in the model or losses"
        )

    def _check_finite_gradients(self):
        """Without clipping there is no norm: one fused check of every gradient instead."""
        grads = [
            p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None
        ]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            raise FloatingPointError(self._non_finite_gradient_message("gradient"))

    def state_dict(self):
        ret = super().state_dict()
        if self.amp:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.amp and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
