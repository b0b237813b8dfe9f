"""Optimizer parameter groups with per-module learning-rate factors."""

import functools

from detectron2.solver.build import get_default_optimizer_params as _d2_default_params
from detectron2.solver.build import reduce_param_groups

__all__ = ["get_default_optimizer_params", "keyword_lr_factor"]


def _keyword_factor(name, keyword, factor):
    return factor if keyword in name else 1.0


def keyword_lr_factor(keyword="backbone", factor=0.1):
    """A `lr_factor_func`: `factor` for parameters whose full name contains `keyword`, else 1.

    Returned as a `functools.partial` so that it pickles (configs are saved, workers spawned).
    """
    return functools.partial(_keyword_factor, keyword=keyword, factor=factor)


def get_default_optimizer_params(
    model,
    base_lr=None,
    weight_decay=None,
    weight_decay_norm=None,
    lr_factor_func=None,
    overrides=None,
):
    """detectron2's `get_default_optimizer_params` plus `lr_factor_func` (newer detectron2 API).

    Args:
        model: the module whose trainable parameters are grouped.
        base_lr: lr of every group before the factor (required with `lr_factor_func`).
        weight_decay: default weight decay (None: the optimizer's).
        weight_decay_norm: weight decay of normalization layers' parameters.
        lr_factor_func: callable(full parameter name, e.g. "backbone.res2.conv1.weight") -> lr
            multiplier.
        overrides: detectron2's per-parameter-name overrides.

    Returns:
        list of param-group dicts for a torch optimizer (merged where hyperparameters agree).
    """
    groups = _d2_default_params(
        model,
        base_lr=base_lr,
        weight_decay=weight_decay,
        weight_decay_norm=weight_decay_norm,
        overrides=overrides,
    )
    if lr_factor_func is None:
        return groups
    if base_lr is None:
        raise ValueError("lr_factor_func requires base_lr")
    names = {p: n for n, p in model.named_parameters()}
    per_param = []
    for group in groups:
        hyper = {k: v for k, v in group.items() if k != "params"}
        for p in group["params"]:
            lr = hyper.get("lr", base_lr) * lr_factor_func(names[p])
            per_param.append({**hyper, "params": [p], "lr": lr})
    return reduce_param_groups(per_param)
