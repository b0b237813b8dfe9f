"""Checkpoint loading: detrex state dicts (with registered key aliases), detectron2 model-zoo
files, torchvision ResNet and original-release Swin ImageNet weights, all through detectron2's
`DetectionCheckpointer`.

Key aliases: detrex registers some modules under several names (Focus-DETR's shared encoder class
head appears as `class_embed.6`, `transformer.encoder.enhance_MCSP.{i}.*` and
`enhance_MCSP_layerlist.{i}.*`). A model that holds such a module once registers the other names
with `register_key_alias(pattern, canonical)`; on load, a checkpoint key that the model does not
have and that matches `pattern` (a full-match regex) is renamed to `canonical` (a `re.sub`
template), or dropped when the checkpoint already holds that canonical key (a shared tensor).
`accept_published_keys(model)` makes the model's own `load_state_dict` apply them (a load pre-hook),
so detectron2's `DetectionCheckpointer`, `load_state_dict(strict=True)` and `DetrCheckpointer`
all load a published checkpoint with no missing or unexpected key.
"""

import logging
import re
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = [
    "CheckpointMismatchError",
    "DetrCheckpointer",
    "accept_published_keys",
    "apply_key_aliases",
    "convert_swin_classifier",
    "convert_torchvision_resnet",
    "is_swin_classifier",
    "is_torchvision_resnet",
    "key_aliases",
    "register_key_alias",
]

logger = logging.getLogger(__name__)
_ALIASES: List[Tuple[re.Pattern, str]] = []


def register_key_alias(pattern: str, canonical: str) -> None:
    """Register that checkpoint keys fully matching regex `pattern` name the tensor
    `re.sub(pattern, canonical, key)` of our model (idempotent)."""
    entry = (re.compile(pattern), canonical)
    if all(p.pattern != pattern or c != canonical for p, c in _ALIASES):
        _ALIASES.append(entry)


def key_aliases() -> List[Tuple[str, str]]:
    """The registered (pattern, canonical) pairs."""
    return [(p.pattern, c) for p, c in _ALIASES]


def apply_key_aliases(
    state_dict: Dict[str, torch.Tensor],
    model_keys: Iterable[str],
    aliases: Optional[List[Tuple[str, str]]] = None,
) -> Dict[str, torch.Tensor]:
    """Rename or drop alias keys (see module docstring). Returns a new dict."""
    model_keys = set(model_keys)
    rules = _ALIASES if aliases is None else [(re.compile(p), c) for p, c in aliases]
    out = dict(state_dict)
    for key in list(out):
        if key in model_keys:
            continue
        for pattern, canonical in rules:
            if not pattern.fullmatch(key):
                continue
            target = pattern.sub(canonical, key)
            if target not in model_keys:
                continue
            value = out.pop(key)
            if target not in out:
                out[target] = value
            elif not torch.equal(out[target], value):
                logger.warning(
                    f"checkpoint key {key} aliases {target} but holds other values; "
                    f"keeping {target}"
                )
            break
    return out


def _rename_published_keys(
    module: torch.nn.Module, state_dict: Dict[str, torch.Tensor], prefix: str, *args
) -> None:
    """Load pre-hook: applies the registered key aliases, in place, to the keys of `state_dict`
    under `prefix` (the module's place in the loaded model, e.g. "module." under DDP)."""
    own = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not own or not _ALIASES:
        return
    local = {k[len(prefix) :]: v for k, v in own.items()}
    renamed = apply_key_aliases(local, module.state_dict().keys())
    if renamed.keys() == local.keys():
        return
    for key in own:
        del state_dict[key]
    state_dict.update({prefix + k: v for k, v in renamed.items()})


def accept_published_keys(model: torch.nn.Module) -> torch.nn.Module:
    """Let `model.load_state_dict` (and so every checkpointer) accept the registered alias
    names (e.g. detrex's Focus-DETR keys) for `model`'s tensors. Returns `model`."""
    model.register_load_state_dict_pre_hook(_rename_published_keys)
    return model


_TV_STAGE = re.compile(r"^layer(\d)\.(\d+)\.(conv|bn)(\d)\.(.+)$")
_TV_DOWN = re.compile(r"^layer(\d)\.(\d+)\.downsample\.([01])\.(.+)$")


def is_torchvision_resnet(state_dict: Dict[str, torch.Tensor]) -> bool:
    return "conv1.weight" in state_dict and any(k.startswith("layer1.0.") for k in state_dict)


def convert_torchvision_resnet(
    state_dict: Dict[str, torch.Tensor], prefix: str = "backbone."
) -> Dict[str, torch.Tensor]:
    """torchvision ResNet names -> detectron2 ResNet names (with `prefix`).

    conv1/bn1 -> stem.conv1(.norm); layer{i}.{b}.conv{k}/bn{k} -> res{i+1}.{b}.conv{k}(.norm);
    layer{i}.{b}.downsample.0/1 -> res{i+1}.{b}.shortcut(.norm); `fc.*` and
    `num_batches_tracked` are dropped (detectron2 ImageNet backbones have no classifier).
    """
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked") or key.startswith("fc."):
            continue
        if key.startswith("conv1."):
            new = "stem.conv1." + key[len("conv1.") :]
        elif key.startswith("bn1."):
            new = "stem.conv1.norm." + key[len("bn1.") :]
        elif _TV_STAGE.match(key):
            stage, block, kind, k, rest = _TV_STAGE.match(key).groups()
            new = f"res{int(stage) + 1}.{block}.conv{k}." + ("norm." if kind == "bn" else "") + rest
        elif _TV_DOWN.match(key):
            stage, block, idx, rest = _TV_DOWN.match(key).groups()
            new = f"res{int(stage) + 1}.{block}.shortcut." + ("norm." if idx == "1" else "") + rest
        else:
            raise KeyError(f"unexpected key {key!r} in a torchvision ResNet state dict")
        out[prefix + new] = value
    return out


def is_swin_classifier(state_dict: Dict[str, torch.Tensor]) -> bool:
    """An ImageNet Swin state dict of the original release (unprefixed `patch_embed.*`,
    `layers.*`, a classifier `head.*`)."""
    return "patch_embed.proj.weight" in state_dict and "head.weight" in state_dict


def convert_swin_classifier(
    state_dict: Dict[str, torch.Tensor], prefix: str = "backbone."
) -> Dict[str, torch.Tensor]:
    """Original Swin classifier names -> `SwinTransformer` backbone names (with `prefix`): the
    same tensor names; the classifier (`head.*`), its final `norm.*` (the backbone normalizes
    each output stage with its own, freshly initialized `norm{i}`) and the shifted blocks'
    precomputed `attn_mask` buffers are dropped."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("head.", "norm.")) or key.endswith(".attn_mask"):
            continue
        if not key.startswith(("patch_embed.", "layers.", "absolute_pos_embed")):
            raise KeyError(f"unexpected key {key!r} in a Swin classifier state dict")
        out[prefix + key] = value
    return out


class CheckpointMismatchError(ValueError):
    """A checkpoint loaded with `strict=True` does not hold exactly the model's weights."""


def _describe_mismatch(incompatible, model_name: str, shown: int = 5) -> str:
    """One message naming the missing, unexpected and wrongly shaped keys ('' when none)."""
    parts = []
    wrong_shape = {k for k, _, _ in incompatible.incorrect_shapes}  # fvcore also lists as missing
    missing = [k for k in incompatible.missing_keys if k not in wrong_shape]
    for what, keys in (("missing", missing), ("unexpected", incompatible.unexpected_keys)):
        if keys:
            more = f", ... {len(keys) - shown} more" if len(keys) > shown else ""
            parts.append(f"{len(keys)} {what} keys ({', '.join(keys[:shown])}{more})")
    if incompatible.incorrect_shapes:
        shapes = [
            f"{k}: checkpoint {tuple(c)}, model {tuple(m)}"
            for k, c, m in incompatible.incorrect_shapes[:shown]
        ]
        parts.append(f"{len(incompatible.incorrect_shapes)} shape mismatches ({'; '.join(shapes)})")
    if not parts:
        return ""
    return (
        f"does not fit {model_name}: {'; '.join(parts)}. A checkpoint of another model, "
        f"backbone only, or another num_classes? Evaluation and the tools need every weight."
    )


class DetrCheckpointer(DetectionCheckpointer):
    """`DetectionCheckpointer` that also loads torchvision ResNet and original Swin ImageNet state
    dicts (as backbone initialization) and detrex checkpoints with registered key aliases;
    `.pth`/`.pt` files are read with `torch.load(weights_only=True)`.

    Args (beyond `DetectionCheckpointer`'s):
        strict: raise `CheckpointMismatchError` naming the keys when the checkpoint's model
            weights (after key aliases) miss any of the model's, hold others or other shapes,
            instead of only logging them. For evaluation and inference, where a partial load
            silently leaves random weights; training initialization (an ImageNet backbone) is
            partial by nature and keeps the default False.
    """

    def __init__(self, model, save_dir: str = "", *, strict: bool = False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.strict = strict

    def load(self, path, checkpointables=None):
        try:
            return super().load(path, checkpointables=checkpointables)
        except CheckpointMismatchError as e:
            raise CheckpointMismatchError(f"checkpoint {path} {e}") from None

    def _log_incompatible_keys(self, incompatible) -> None:
        message = _describe_mismatch(incompatible, type(self.model).__name__) if self.strict else ""
        if message:
            raise CheckpointMismatchError(message)
        super()._log_incompatible_keys(incompatible)

    def _load_file(self, filename: str):
        if filename.endswith((".pth", ".pt")):
            loaded = torch.load(filename, map_location="cpu", weights_only=True)
            return loaded if "model" in loaded else {"model": loaded}
        return super()._load_file(filename)

    def _load_model(self, checkpoint):
        state = checkpoint["model"]
        if is_torchvision_resnet(state):
            logger.info("Converting a torchvision ResNet state dict to backbone.* keys")
            state = convert_torchvision_resnet(state)
            checkpoint["matching_heuristics"] = False
        elif is_swin_classifier(state):
            logger.info("Converting an ImageNet Swin state dict to backbone.* keys")
            state = convert_swin_classifier(state)
            checkpoint["matching_heuristics"] = False
        checkpoint["model"] = apply_key_aliases(state, self.model.state_dict().keys())
        return super()._load_model(checkpoint)
