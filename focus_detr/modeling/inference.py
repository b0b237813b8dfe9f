"""Inference transforms of a built detector, applied as a step of their own after construction.

A model's constructor only builds it; `optimize(model, ...)` then makes its inference faster
without changing its parameters, buffers or state-dict keys, and without touching training (both
transforms act only where no gradient flows, and never while a graph is traced or exported):

- `fold_norms`: the backbone's frozen (or eval-mode) batch norms are folded into their
  convolutions, channels-last on CPU (`focus_detr.layers.folded_conv`): the same outputs up to
  float rounding.
- `reduced_precision`: the named submodules run under autocast in bfloat16 or float16, their
  outputs cast back to float32 (`focus_detr.layers.reduced_precision`): outputs close to but no
  longer equal to float32's; faster only on CPUs/GPUs with instructions for that dtype.

`optimize` is declarative and idempotent: each call leaves the model with exactly the transforms
it names (a second call with other values replaces the first call's, not adds to them).

A LazyConfig's `model` of the DINO family takes the same choices as the config keys
`model.fold_backbone_norms`, `model.reduced_precision` and `model.reduced_precision_modules`
(`MODEL_INFERENCE_KEYS`), read by `instantiate_model(cfg.model)`, which builds the model without
them and then calls `optimize`. detectron2's plain `instantiate(cfg.model)` builds the model
untransformed (and refuses those keys).
"""

from typing import Any, Dict, Mapping, Optional, Sequence

from detectron2.config import instantiate
from detectron2.utils.registry import locate
from torch import nn

from ..layers.folded_conv import fold_conv_norms, unfold_conv_norms
from ..layers.reduced_precision import (
    disable_reduced_precision,
    enable_reduced_precision,
    resolve_reduced_precision,
)
from .meta_arch.dino import DINO

__all__ = [
    "DEFAULT_REDUCED_PRECISION_MODULES",
    "MODEL_INFERENCE_KEYS",
    "inference_config_keys",
    "instantiate_model",
    "optimize",
    "takes_inference_options",
]

# most of the compute; the two-stage proposals, the decoder and the box heads stay float32
# (box coordinates need its precision: bfloat16 keeps 8 significant bits, ~3 px at 800 px)
DEFAULT_REDUCED_PRECISION_MODULES = ("backbone", "neck", "transformer.encoder")

# config key under `cfg.model` -> (`optimize` argument, default)
MODEL_INFERENCE_KEYS: Dict[str, tuple] = {
    "fold_backbone_norms": ("fold_norms", True),
    "reduced_precision": ("reduced_precision", None),
    "reduced_precision_modules": (
        "reduced_precision_modules",
        list(DEFAULT_REDUCED_PRECISION_MODULES),
    ),
}


def optimize(
    model: nn.Module,
    fold_norms: bool = True,
    reduced_precision: Optional[Any] = None,
    reduced_precision_modules: Sequence[str] = DEFAULT_REDUCED_PRECISION_MODULES,
) -> nn.Module:
    """Apply the inference transforms to `model` in place (module docstring); returns `model`.

    Args:
        model: a detector with a `backbone` (DINO, Focus-DETR, Sparse DETR).
        fold_norms: fold the backbone's frozen batch norms into its convolutions (False undoes
            an earlier fold). Default True.
        reduced_precision: None or "float32" (full precision, the default), "bfloat16" /
            "bf16" or "float16" / "fp16" (or the torch dtype).
        reduced_precision_modules: dotted submodule names (as in `model.named_modules()`) run in
            `reduced_precision`. Default the backbone, the neck and the encoder.
    Raises:
        ValueError: an unknown precision or submodule name (nothing is changed then).
        TypeError: `model` has no `backbone` to fold.

    The choices are recorded as `model.fold_backbone_norms` and `model.reduced_precision`.
    """
    dtype = resolve_reduced_precision(reduced_precision)
    modules = dict(model.named_modules())
    missing = [name for name in reduced_precision_modules if name not in modules]
    if dtype is not None and missing:
        raise ValueError(
            f"reduced_precision_modules: no submodule named {missing} in "
            f"{type(model).__name__} (top-level children: "
            f"{[n for n, _ in model.named_children()]})"
        )
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise TypeError(
            f"optimize: {type(model).__name__} has no `backbone` module whose norms "
            "could be folded; pass a detector of the DINO family"
        )
    if fold_norms:
        fold_conv_norms(backbone)
    else:
        unfold_conv_norms(backbone)
    disable_reduced_precision(model)
    enable_reduced_precision(model, list(reduced_precision_modules), dtype)
    model.fold_backbone_norms = bool(fold_norms)
    model.reduced_precision = None if dtype is None else reduced_precision
    return model


def takes_inference_options(model_cfg: Mapping) -> bool:
    """Whether the LazyConfig node `model_cfg` builds a DINO-family model (its `_target_` is
    `DINO` or a subclass), whose config takes `MODEL_INFERENCE_KEYS`."""
    target = model_cfg.get("_target_", None) if hasattr(model_cfg, "get") else None
    if isinstance(target, str):
        try:
            target = locate(target)
        except Exception:  # unresolvable: instantiate reports it
            return False
    return isinstance(target, type) and issubclass(target, DINO)


def inference_config_keys(cfg) -> Dict[str, Any]:
    """{dotted config key: default} of the inference keys that `cfg.model` takes (none for a
    model outside the DINO family), for the strict override check
    (`focus_detr.engine.config.apply_overrides(..., extra_keys=...)`)."""
    if "model" not in cfg or not takes_inference_options(cfg.model):
        return {}
    return {f"model.{key}": default for key, (_, default) in MODEL_INFERENCE_KEYS.items()}


def instantiate_model(model_cfg) -> nn.Module:
    """`instantiate(model_cfg)`, then, for a DINO-family model, `optimize` with the node's
    `MODEL_INFERENCE_KEYS` (their defaults where not set). The node is left as it was.

    Raises:
        KeyError: an inference key set on a model outside the DINO family.
    """
    given = [key for key in MODEL_INFERENCE_KEYS if key in model_cfg]
    if not takes_inference_options(model_cfg):
        if given:
            raise KeyError(
                f"model.{given[0]}: the inference options {list(MODEL_INFERENCE_KEYS)}"
                f" apply to DINO-family models, not to {model_cfg.get('_target_')}; "
                "remove the key, or call focus_detr.modeling.optimize yourself"
            )
        return instantiate(model_cfg)
    values = {key: model_cfg.pop(key) for key in given}
    try:
        model = instantiate(model_cfg)
    finally:
        for key, value in values.items():
            model_cfg[key] = value
    options = {
        arg: values.get(key, default) for key, (arg, default) in MODEL_INFERENCE_KEYS.items()
    }
    return optimize(model, **options)
