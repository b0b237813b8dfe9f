"""Command-line `key=value` overrides of a LazyConfig that refuse unknown keys."""

import difflib
import inspect

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["apply_overrides", "check_override_key"]


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


def check_override_key(cfg, key):
    """Raise KeyError naming `key` unless it exists in `cfg` (dotted path).

    A key below a LazyCall node also exists when the node's target takes it as an argument
    (e.g. a constructor default that the config does not spell out).
    """
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
        raise _unknown(key, prefix, part, choices)


def apply_overrides(cfg, overrides):
    """Apply hydra-syntax overrides ("a.b=1", "+a.new=2") in place; unknown keys are errors.

    Like `LazyConfig.apply_overrides`, which silently adds a misspelled key; a leading "+"
    adds a new key on purpose.

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
        if not (o.is_add() or o.is_force_add()):
            check_override_key(cfg, key)
        OmegaConf.update(cfg, key, o.value(), merge=True)
    return cfg
