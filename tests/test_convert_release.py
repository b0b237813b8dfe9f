"""tools/convert_release.py on release-style zips made from synthesized weights under the
published (detrex) key names: the converted checkpoint loads strictly into our config's model
with every tensor in place; a release of another model, or a zip without weights, is refused
naming what is wrong."""

import zipfile
from pathlib import Path

import pytest
import torch

from focus_detr.modeling import CheckpointMismatchError
from focus_detr.engine.published_checkpoints import DetrCheckpointer, apply_key_aliases
from reference_keys import FIXTURES, read_key_shapes
from synth_weights import state_dict as synth_state_dict
from tests.tools_utils import REPO_ROOT, load_tool

CONFIG = str(REPO_ROOT / "projects" / "focus_detr" / "configs" / "focus_detr_r50_4scale_36ep.py")


def _release_zip(path: Path, weights, member="focus_detr_r50_4scale_36ep/model_final.pth"):
    """A zip like the model zoo's: one .pth (a {"model": state dict}) in a folder."""
    pth = path.parent / "model_final.pth"
    torch.save({"model": weights, "iteration": 269999}, pth)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.write(pth, member)
        archive.writestr("README.txt", "Focus-DETR-R50 36 epochs")
    pth.unlink()
    return path


@pytest.fixture(scope="module")
def published():
    keys = read_key_shapes("focus_detr_r50_detrex_keys.tsv")
    aliases = torch.load(FIXTURES / "focus_detr_r50_reference.pt", weights_only=True)["aliases"]
    return synth_state_dict(list(keys.items()), aliases, salt="release-zip")


def test_release_zip_converts_to_a_checkpoint_our_config_loads(tmp_path, published, capsys):
    from detectron2.config import instantiate

    from focus_detr.analysis import load_config

    release = _release_zip(tmp_path / "focus_detr_r50_4scale_36ep.zip", published)
    output = tmp_path / "weights" / "focus_detr_r50.pth"
    tool = load_tool("convert_release")
    summary = tool.main(["--config-file", CONFIG, "--input", str(release), "--output", str(output)])
    assert summary["release_keys"] == len(published) and output.is_file()
    printed = capsys.readouterr().out
    assert f"--eval-only train.init_checkpoint={output}" in printed

    model = instantiate(load_config(CONFIG).model)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    DetrCheckpointer(model, strict=True).load(str(output))
    ours = model.state_dict()
    for key, value in published.items():  # every published tensor in its (aliased) place
        target = key if key in ours else next(iter(apply_key_aliases({key: value}, ours.keys())))
        assert torch.equal(ours[target], value), key


def test_a_release_of_another_model_is_refused(tmp_path):
    dino = read_key_shapes("dino_r50_detrex_keys.tsv")
    release = _release_zip(tmp_path / "dino.zip", synth_state_dict(list(dino.items())))
    tool = load_tool("convert_release")
    with pytest.raises(CheckpointMismatchError, match=r"dino.zip:.*model_final.pth does not fit"):
        tool.main(
            [
                "--config-file",
                CONFIG,
                "--input",
                str(release),
                "--output",
                str(tmp_path / "out.pth"),
            ]
        )
    assert not (tmp_path / "out.pth").exists()


def test_a_zip_without_weights_is_named(tmp_path):
    from focus_detr.modeling.release import read_release

    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("README.txt", "no weights")
    with pytest.raises(
        ValueError,
        match=r"empty.zip: expected one .pth/.pt file in the zip, "
        r"found none",
    ):
        read_release(str(empty))
