"""Inference-only speed-ups measured by the benchmark (`tools/benchmark.py --optimize`).

- `fold_batchnorm`: fold frozen (or eval-mode) batch norms into the preceding convolution's
  weights and bias (detectron2 `Conv2d` with a `norm`), removing a memory-bound pass per conv.
- channels-last memory format for the backbone (oneDNN's preferred layout on CPU).
Both keep the outputs equal up to float rounding; they change the state dict (folded weights,
no norm buffers), so apply them to a model used for inference only, after loading weights.
"""

import torch
from torch import nn

__all__ = ["fold_batchnorm", "optimize_for_inference"]


@torch.no_grad()
def fold_batchnorm(module: nn.Module) -> int:
    """Fold every `FrozenBatchNorm2d` / eval-mode `BatchNorm2d` that is the `norm` of a
    detectron2 `Conv2d` into that convolution, in place. Returns the number folded.

    Raises:
        RuntimeError: a BatchNorm2d to fold is in training mode (its statistics would change).
    """
    from detectron2.layers import Conv2d, FrozenBatchNorm2d

    folded = 0
    for conv in module.modules():
        norm = getattr(conv, "norm", None)
        if not isinstance(conv, Conv2d) or not isinstance(
            norm, (FrozenBatchNorm2d, nn.BatchNorm2d)
        ):
            continue
        if isinstance(norm, nn.BatchNorm2d) and norm.training:
            raise RuntimeError("fold_batchnorm: a BatchNorm2d is in training mode; call .eval()")
        weight = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
        bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
        scale = weight / torch.sqrt(norm.running_var + norm.eps)
        conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight))
        old_bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        new_bias = (old_bias - norm.running_mean) * scale + bias
        conv.bias = nn.Parameter(new_bias.to(conv.weight), requires_grad=False)
        conv.norm = None
        folded += 1
    return folded


def optimize_for_inference(model: nn.Module, fold: bool = True, channels_last: bool = True) -> dict:
    """Apply the speed-ups to a DINO-family model's backbone and neck (in place).

    Returns {"folded_norms": int, "channels_last": bool}.
    """
    folded = 0
    for part in (model.backbone, model.neck):
        if fold:
            folded += fold_batchnorm(part)
        if channels_last:
            part.to(memory_format=torch.channels_last)
    if channels_last:
        _input_channels_last(model)
    return {"folded_norms": folded, "channels_last": channels_last}


def _input_channels_last(model: nn.Module) -> None:
    """Make the backbone receive its input in channels-last layout (a forward pre-hook)."""

    def hook(module, args):
        return (args[0].contiguous(memory_format=torch.channels_last),) + tuple(args[1:])

    model.backbone.register_forward_pre_hook(hook)
