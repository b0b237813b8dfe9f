"""The published models' state-dict key lists (tests/fixtures/*_keys.tsv) and loading
synthesized weights under those keys through our checkpointer."""

import ast
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from focus_detr.engine.published_checkpoints import DetrCheckpointer
from synth_weights import state_dict as synth_state_dict

FIXTURES = Path(__file__).parent / "fixtures"


def read_keys_tsv(name: str) -> Tuple[Dict[str, Tuple[Tuple[int, ...], str]], Optional[int]]:
    """{key: (shape, dtype)} of fixtures/<name> in file order, and the "# params N" total."""
    keys, total = {}, None
    for line in (FIXTURES / name).read_text().splitlines():
        if line.startswith("# params"):
            total = int(line.split()[-1])
        elif line and not line.startswith("#"):
            key, shape, dtype = line.split("\t")
            keys[key] = (tuple(ast.literal_eval(shape)), dtype)
    return keys, total


def read_key_shapes(name: str) -> Dict[str, Tuple[int, ...]]:
    """{key: shape} of fixtures/<name>."""
    return {key: shape for key, (shape, _) in read_keys_tsv(name)[0].items()}


def load_synthesized(
    model, keys_file: str, aliases: dict, salt: str, constant_rows, directory: Path
):
    """Writes the fixture's synthesized weights (`synth_weights.state_dict` with `aliases`,
    `salt`, `constant_rows`) under the published key names of `keys_file` as a checkpoint in
    `directory`, loads it into `model` through `DetrCheckpointer` (key aliases applied) and
    asserts that every key matched."""
    keys, _ = read_keys_tsv(keys_file)
    weights = synth_state_dict(
        [(k, shape) for k, (shape, _) in keys.items()],
        aliases,
        salt=salt,
        constant_rows=constant_rows,
    )
    path = Path(directory) / keys_file.replace("_keys.tsv", "_synth.pth")
    torch.save({"model": weights}, path)
    del weights
    checkpointer = DetrCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(path)))
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert not incompatible.incorrect_shapes
    return model
