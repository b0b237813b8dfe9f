"""Inference of chosen submodules under autocast (bfloat16 or float16), the rest in float32.

A DETR's cost is in precision-tolerant matrix products (the backbone's convolutions, the encoder's
projections and FFNs), while its box coordinates need float32: bfloat16 keeps 8 significant bits,
about 3 px at 800 px, and the decoder refines its boxes through a chain of sigmoids. So reduced
precision is applied per submodule: each chosen module runs under `torch.autocast` and its floating
outputs of the reduced dtype are cast back to float32 (tensors in lists, tuples, dicts and
dataclasses), so that the modules after it run exactly as before. Only where no gradient flows
(`torch.no_grad()` / `torch.inference_mode()`) and not while jit tracing (FLOP counting): training
keeps its own precision policy (detectron2's `AMPTrainer`).

On a CPU with bfloat16 dot-product instructions (AVX512-BF16, AMX) this roughly doubles the speed
of the chosen modules; on one without them it is slower (README "Cost").
"""

import copy
import dataclasses
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from .graph_capture import capturing_graph

__all__ = [
    "REDUCED_PRECISION_DTYPES",
    "disable_reduced_precision",
    "enable_reduced_precision",
    "resolve_reduced_precision",
]

REDUCED_PRECISION_DTYPES: Dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_reduced_precision(dtype) -> Optional[torch.dtype]:
    """The reduced dtype that `dtype` names; None for full precision (None, "None", "float32").

    Raises:
        ValueError: naming the value and the accepted ones.
    """
    if dtype in _FULL_PRECISION:
        return None
    return _resolve_dtype(dtype)


_FULL_PRECISION = (None, "None", "float32", torch.float32)


def _resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in REDUCED_PRECISION_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in REDUCED_PRECISION_DTYPES:
        return REDUCED_PRECISION_DTYPES[dtype]
    raise ValueError(
        f"reduced precision dtype must be None, 'float32' or one of "
        f"{sorted(REDUCED_PRECISION_DTYPES)}, got {dtype!r}"
    )


def _cast_back(obj: Any, low: torch.dtype, high: torch.dtype) -> Any:
    """`obj` with every floating tensor of dtype `low` cast to `high`, through containers."""
    if isinstance(obj, torch.Tensor):
        return obj.to(high) if obj.dtype == low else obj
    if isinstance(obj, (list, tuple)):
        items = [_cast_back(x, low, high) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if isinstance(obj, dict):
        out = copy.copy(obj)
        for k, v in obj.items():
            out[k] = _cast_back(v, low, high)
        return out
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = copy.copy(obj)
        for f in dataclasses.fields(obj):
            object.__setattr__(out, f.name, _cast_back(getattr(obj, f.name), low, high))
        return out
    return obj


def _device_type(module: nn.Module, args) -> str:
    for x in args:
        if isinstance(x, torch.Tensor):
            return x.device.type
    for p in module.parameters():
        return p.device.type
    return "cpu"


class _AutocastHooks:
    """Forward pre-hook enters autocast, forward hook (always called) leaves it and casts back."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self._contexts: List[Optional[torch.autocast]] = []  # LIFO: nested calls

    def before(self, module: nn.Module, args):
        context = None
        if not torch.is_grad_enabled() and not capturing_graph():
            context = torch.autocast(_device_type(module, args), dtype=self.dtype)
            context.__enter__()
        self._contexts.append(context)

    def after(self, module: nn.Module, args, output):
        context = self._contexts.pop()
        if context is None:
            return None
        context.__exit__(None, None, None)
        return _cast_back(output, self.dtype, torch.float32)


def enable_reduced_precision(
    model: nn.Module, module_names: Sequence[str], dtype="bfloat16"
) -> List[Any]:
    """Run the named submodules of `model` under autocast at inference (module docstring).

    Args:
        model: any module; parameters, buffers and state-dict keys are left unchanged.
        module_names: dotted names as in `model.named_modules()`, e.g. "backbone",
            "transformer.encoder".
        dtype: "bfloat16" (alias "bf16") or "float16" (alias "fp16"), or the torch dtype;
            None or "float32": nothing to do (full precision, e.g. to switch a config's choice
            off from the command line).
    Returns:
        The hook handles (`handle.remove()` for each restores full precision).
    """
    dtype = resolve_reduced_precision(dtype)
    if dtype is None:
        return []
    modules = dict(model.named_modules())
    missing = [name for name in module_names if name not in modules]
    if missing:
        raise ValueError(
            f"reduced precision: no submodule named {missing} in "
            f"{type(model).__name__} (top-level children: "
            f"{[n for n, _ in model.named_children()]})"
        )
    handles = []
    for name in module_names:
        hooks = _AutocastHooks(dtype)
        handles.append(modules[name].register_forward_pre_hook(hooks.before))
        handles.append(modules[name].register_forward_hook(hooks.after, always_call=True))
    return handles


def disable_reduced_precision(model: nn.Module) -> int:
    """Remove every hook :func:`enable_reduced_precision` installed in `model` (full precision
    again). The hooks are found on the modules themselves, not through handles, so a copy of the
    model (`copy.deepcopy`) is handled as well. Returns the number of modules that had them."""
    count = 0
    for module in model.modules():
        ours = [
            (hooks, key)
            for hooks in (module._forward_pre_hooks, module._forward_hooks)
            for key, hook in hooks.items()
            if isinstance(getattr(hook, "__self__", None), _AutocastHooks)
        ]
        for hooks, key in ours:
            del hooks[key]
            module._forward_hooks_always_called.pop(key, None)
        count += bool(ours)
    return count
