"""The config loader: a LazyConfig file with command-line `key=value` overrides that refuse
unknown keys and values of another type than the key's default."""

import difflib
import inspect
import os

from detectron2.config import LazyConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["apply_overrides", "check_override_key", "check_override_type", "load_config"]


def _target_parameters(target):
    """Parameters of a LazyCall target (callable or import path); None when unknown."""
    if isinstance(target, str):
        from hydra.utils import get_method

        try:
            target = get_method(target)
        except Exception:  # unresolvable: let instantiate report it later
            return None
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return None


def _accepts_argument(target, name):
    """Whether the LazyCall target `target` takes argument `name`."""
    params = _target_parameters(target)
    if params is None:
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _unknown(key, prefix, part, choices):
    hint = difflib.get_close_matches(part, [str(c) for c in choices], n=3)
    where = f"'{prefix}'" if prefix else "the config"
    msg = f"unknown config key '{key}': {where} has no key '{part}'"
    if hint:
        msg += f" (did you mean {', '.join(repr(h) for h in hint)}?)"
    return KeyError(msg + f". To add a new key on purpose, write '+{key}=...'.")


def check_override_key(cfg, key, extra_keys=()):
    """Raise KeyError naming `key` unless it exists in `cfg` (dotted path).

    A key below a LazyCall node also exists when the node's target takes it as an argument
    (e.g. a constructor default that the config does not spell out), and a key of `extra_keys`
    (dotted keys that the code building the config reads besides the targets' arguments, e.g.
    `focus_detr.modeling.inference_config_keys(cfg)`) always exists.
    """
    if key in extra_keys:
        return
    node, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        prefix = ".".join(parts[:i])
        if isinstance(node, ListConfig):
            if not (part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node)):
                raise KeyError(
                    f"unknown config key '{key}': '{prefix}' is a list of "
                    f"{len(node)} items, '{part}' is not a valid index"
                )
            node = node[int(part)]
            continue
        if not isinstance(node, DictConfig):
            raise KeyError(
                f"unknown config key '{key}': '{prefix}' is a value "
                f"({type(node).__name__}), not a config node"
            )
        if part in node:
            child = node._get_node(part)  # no interpolation resolution while walking
            node = child if isinstance(child, (DictConfig, ListConfig)) else child._value()
            continue
        target = node.get("_target_", None)
        if target is not None and i == len(parts) - 1 and _accepts_argument(target, part):
            return
        choices = [k for k in node.keys() if k != "_target_"]
        if target is not None:
            choices += list(_target_parameters(target) or ())
        choices += [
            k[len(prefix) + 1 :]
            for k in extra_keys
            if k.startswith(prefix + ".") and "." not in k[len(prefix) + 1 :]
        ]
        raise _unknown(key, prefix, part, choices)


_MISSING = object()


def _default_value(cfg, key, extra_keys=None):
    """The value `key` has in `cfg` before the override (a LazyCall target's parameter default
    when the config does not spell it out, else its default in `extra_keys`); `_MISSING` when
    unknown or an interpolation."""
    value = _config_value(cfg, key)
    if value is _MISSING and extra_keys and key in extra_keys:
        return extra_keys[key]
    return value


def _config_value(cfg, key):
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, ListConfig):
            try:
                node = node._get_node(int(part))
            except (ValueError, IndexError, KeyError):
                return _MISSING
        elif isinstance(node, DictConfig):
            if part in node:
                node = node._get_node(part)
            else:
                target = node.get("_target_", None)
                params = _target_parameters(target) if target is not None else None
                if i != len(parts) - 1 or not params or part not in params:
                    return _MISSING
                default = params[part].default
                return _MISSING if default is inspect.Parameter.empty else default
        else:
            return _MISSING
        if not isinstance(node, (DictConfig, ListConfig)):
            if node._is_interpolation():
                return _MISSING
            node = node._value()
    return node


def _type_name(value):
    if isinstance(value, (ListConfig, list, tuple)):
        return "list"
    if isinstance(value, (DictConfig, dict)):
        return "dict"
    return type(value).__name__


def check_override_type(key, value, default):
    """`value` for `key` as the config will hold it, checked against the type of `default`.

    int and float defaults take numbers (an int for a float, not a float for an int), bool
    takes only true/false, lists take lists, dicts take dicts; a number given for a string key
    becomes its string. `None` either way and interpolations are not checked.

    Raises:
        TypeError: naming the key, the value and the expected type.
    """
    if value is None or default is None or default is _MISSING:
        return value
    if isinstance(value, str) and "${" in value:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        if isinstance(value, (int, float, bool)):
            return str(value).lower() if isinstance(value, bool) else str(value)
        ok = isinstance(value, str)
    elif isinstance(default, (ListConfig, list, tuple)):
        ok = isinstance(value, (ListConfig, list, tuple))
    elif isinstance(default, (DictConfig, dict)):
        ok = isinstance(value, (DictConfig, dict))
    else:  # callables, classes, other objects: nothing to compare with
        return value
    if not ok:
        shown = "" if isinstance(default, (DictConfig, ListConfig)) else f" (default {default!r})"
        raise TypeError(
            f"config key '{key}': value {value!r} has type {_type_name(value)}, expected type "
            f"{_type_name(default)}{shown}; give a value of that type"
        )
    return value


def apply_overrides(cfg, overrides, extra_keys=None):
    """Apply hydra-syntax overrides ("a.b=1", "+a.new=2") in place; unknown keys are errors.

    Like `LazyConfig.apply_overrides`, which silently adds a misspelled key; a leading "+"
    adds a new key on purpose. A value of another type than the key's default is refused here
    (`check_override_type`), not deep in training.

    Args:
        extra_keys: {dotted key: default} that exist besides the config's own keys and its
            targets' arguments (see `check_override_key`).

    Returns:
        cfg
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra.errors import OverrideParseException

    overrides = list(overrides)
    for o in overrides:
        if o.startswith("-"):
            raise ValueError(
                f"'{o}' is not a key=value override: command-line options must "
                "come before the overrides"
            )
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        raise ValueError(f"cannot parse the overrides {overrides}: {e}") from e
    for o in parsed:
        if o.is_delete():
            raise ValueError(f"deleting config keys is not supported: {o.input_line}")
        key = o.key_or_group
        value = o.value()
        if not (o.is_add() or o.is_force_add()):
            check_override_key(cfg, key, extra_keys or ())
            value = check_override_type(key, value, _default_value(cfg, key, extra_keys))
        OmegaConf.update(cfg, key, value, merge=True)
    return cfg


def load_config(path, overrides=(), required=("model",), defaults=None, extra_keys=None):
    """The LazyConfig file `path` with `overrides` applied strictly (`apply_overrides`).

    Args:
        required: top-level keys the file must define.
        defaults: {top-level key: dict} added where the file lacks that key, before the
            overrides (e.g. a model-only file still takes `train.init_checkpoint=...`).
        extra_keys: {dotted key: default} or a function of the loaded config returning one,
            keys that exist besides the config's own (see `check_override_key`).

    Raises:
        FileNotFoundError: no such file. KeyError: a required key is missing, or an override
        names an unknown key. TypeError: an override's value has the wrong type.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = LazyConfig.load(path)
    missing = [k for k in required if k not in cfg]
    if missing:
        raise KeyError(f"config {path} does not define {', '.join(missing)}")
    for key, value in (defaults or {}).items():
        if key not in cfg:
            cfg[key] = OmegaConf.create(value)
    if callable(extra_keys):
        extra_keys = extra_keys(cfg)
    return apply_overrides(cfg, list(overrides), extra_keys)
