"""Published release files (detrex / Focus-DETR model zoo) to checkpoints our configs load.

The releases ship a zip holding one `.pth` (a state dict, or a dict with it under "model"), with
detrex's key names; `convert_release` reads it (or a bare `.pth`), checks that it fits the model
of one of our configs exactly (every key, every shape, after the registered key aliases such as
Focus-DETR's shared class head), and writes `{"model": state_dict}` under our names, loadable by
`train.init_checkpoint=...` of that config. Nothing is downloaded.
"""

import os
import shutil
import tempfile
import zipfile
from types import SimpleNamespace
from typing import Any, Dict, Sequence, Tuple

import torch

from ..engine.published_checkpoints import (
    CheckpointMismatchError,
    _describe_mismatch,
    apply_key_aliases,
)

__all__ = ["convert_release", "read_release"]

WEIGHT_SUFFIXES = (".pth", ".pt")


def _is_torch_archive(names: Sequence[str]) -> bool:
    # torch.save's own format is a zip whose members sit under "<name>/data.pkl"
    return any(n.endswith("/data.pkl") or n == "data.pkl" for n in names)


def _weights_members(archive: zipfile.ZipFile):
    return [
        n
        for n in archive.namelist()
        if n.lower().endswith(WEIGHT_SUFFIXES)
        and not n.startswith("__MACOSX/")
        and not os.path.basename(n).startswith("._")
    ]


def _state_dict(loaded: Any, source: str) -> Dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise ValueError(
            f"{source} holds no state dict (a dict of tensors, possibly under "
            "'model' or 'state_dict')"
        )
    return loaded


def read_release(path: str, member: str = None) -> Tuple[Dict[str, torch.Tensor], str]:
    """(state dict, what it was read from) of a release zip or a `.pth` file.

    Args:
        path: a zip holding one `.pth`/`.pt` (`member` picks one of several), or the file itself.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"release file not found: {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not _is_torch_archive(names):
                members = _weights_members(archive)
                if member is not None:
                    members = [m for m in members if m == member or os.path.basename(m) == member]
                if len(members) != 1:
                    found = ", ".join(_weights_members(archive)) or "none"
                    named = f" named {member}" if member else ""
                    hint = "; pick one with --member" if len(members) > 1 else ""
                    raise ValueError(
                        f"{path}: expected one .pth/.pt file in the zip{named}, found {found}{hint}"
                    )
                source = f"{path}:{members[0]}"
                folder = tempfile.mkdtemp(prefix="focus_detr_release_")
                try:
                    extracted = archive.extract(members[0], folder)
                    loaded = torch.load(extracted, map_location="cpu", weights_only=True)
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
                return _state_dict(loaded, source), source
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    return _state_dict(loaded, path), path


def convert_release(
    path: str, model: torch.nn.Module, output: str, member: str = None
) -> Dict[str, Any]:
    """Read a release file, load it into `model` exactly, write `{"model": state_dict}` to
    `output` under the model's own key names. Returns a summary (source, keys, parameters).

    Raises:
        CheckpointMismatchError: the weights do not fit `model` (missing, unexpected or
            other-shaped keys, named), e.g. a release of another model or config.
        ValueError: a tensor holds non-finite values.
    """
    state, source = read_release(path, member)
    ours = model.state_dict()
    renamed = apply_key_aliases(state, ours.keys())
    missing = [k for k in ours if k not in renamed]
    unexpected = [k for k in renamed if k not in ours]
    shapes = [
        (k, tuple(renamed[k].shape), tuple(ours[k].shape))
        for k in ours
        if k in renamed and renamed[k].shape != ours[k].shape
    ]
    incompatible = SimpleNamespace(
        missing_keys=missing, unexpected_keys=unexpected, incorrect_shapes=shapes
    )
    message = _describe_mismatch(incompatible, type(model).__name__)
    if message:
        raise CheckpointMismatchError(f"{source} {message}")
    for key, value in renamed.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{source}: tensor {key} holds non-finite values")
    converted = {k: renamed[k].to(ours[k].dtype) for k in ours}
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = output + ".tmp"
    torch.save({"model": converted}, tmp)
    os.replace(tmp, output)  # a killed conversion leaves no half-written checkpoint
    params = sum(v.numel() for v in converted.values() if v.is_floating_point())
    return {
        "source": source,
        "output": output,
        "keys": len(converted),
        "release_keys": len(state),
        "parameters": params,
        "aliased": len(state) - len(renamed),
    }
