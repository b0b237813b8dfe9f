"""tools/demo.py as detrex users know it: overrides after the options, after `--input` or after
`--opts`; `--output` a file for one image; undecodable files named and skipped; a hint when no
detection passes the threshold."""

import re

import numpy as np
import torch
import pytest
from PIL import Image

from tests.tools_utils import FOCUS_TINY, load_tool


def _image(path, size=(90, 120), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def test_overrides_are_taken_from_input_opts_and_the_end(tmp_path):
    tool = load_tool("demo")
    args = tool.parse_args(
        [
            "--config-file",
            FOCUS_TINY,
            "--input",
            "a.png",
            "b/",
            "train.init_checkpoint=m.pth",
            "--output",
            "out",
            "model.x=1",
            "--opts",
            "model.y=2",
        ]
    )
    assert args.input == ["a.png", "b/"]
    assert args.opts == ["train.init_checkpoint=m.pth", "model.x=1", "model.y=2"]
    assert tool.parse_args(
        ["--config-file", FOCUS_TINY, "--input", "a.png", "--output", "o", "--opts", "a=1", "b=2"]
    ).opts == ["a=1", "b=2"]


def test_an_output_file_needs_one_input_image(tmp_path, capsys):
    tool = load_tool("demo")
    with pytest.raises(SystemExit):
        tool.parse_args(
            [
                "--config-file",
                FOCUS_TINY,
                "--input",
                str(tmp_path),
                "--output",
                str(tmp_path / "x.png"),
            ]
        )
    assert "is a file name, for one input image" in capsys.readouterr().err


def test_a_truncated_jpeg_is_named_and_skipped(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    _image(folder / "a.png")
    _image(folder / "b.jpg", seed=1)
    data = (folder / "b.jpg").read_bytes()
    (folder / "b.jpg").write_bytes(data[: len(data) // 2])  # a download cut short
    _image(folder / "c.png", size=(64, 80), seed=2)
    tool = load_tool("demo")
    written = tool.main(
        [
            "--config-file",
            FOCUS_TINY,
            "--input",
            str(folder),
            "--output",
            str(tmp_path / "out"),
            "--confidence-threshold",
            "1.0",
        ]
    )
    assert [p.split("/")[-1] for p in written] == ["a.png", "c.png"]
    out = capsys.readouterr().out
    assert f"{folder / 'b.jpg'}: skipped, cannot decode the image" in out
    assert f"skipped 1 that could not be decoded: {folder / 'b.jpg'}" in out
    # nothing scores 1.0: each image says so with its best score, the summary gives the hint
    best = re.findall(r"a.png: no detection >= 1.0 \(highest score (0\.\d\d)\)", out)
    assert best, out
    assert "2 of 2 image(s) have no detection >= 1.0; the highest score seen is" in out
    assert "a lower --confidence-threshold" in out


def test_one_image_to_an_output_file(tmp_path):
    _image(tmp_path / "in.jpg")
    tool = load_tool("demo")
    target = tmp_path / "sub" / "drawn.png"
    written = tool.main(
        [
            "--config-file",
            FOCUS_TINY,
            "--input",
            str(tmp_path / "in.jpg"),
            "--output",
            str(target),
            "--confidence-threshold",
            "0.0",
        ]
    )
    assert written == [str(target)]
    with Image.open(target) as im:
        assert im.size == (120, 90)


def test_only_undecodable_inputs_is_an_error(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"not a jpeg")
    tool = load_tool("demo")
    with pytest.raises(SystemExit, match="no input image could be decoded"):
        tool.main(
            [
                "--config-file",
                FOCUS_TINY,
                "--input",
                str(tmp_path / "x.jpg"),
                "--output",
                str(tmp_path / "out"),
            ]
        )


def test_demo_runs_an_exported_graph(tmp_path):
    """`--onnx`: the exported graph (fixed 96x128 input) runs on a 90x120 file; its drawing has
    the file's size."""
    pytest.importorskip("onnxruntime", reason="pip install -e '.[deploy]'")
    from detectron2.config import LazyConfig

    from focus_detr.deploy import export_onnx
    from focus_detr.modeling import instantiate_model

    torch.manual_seed(0)
    model = instantiate_model(LazyConfig.load(FOCUS_TINY).model).eval()
    graph = export_onnx(model, tmp_path / "tiny.onnx", (96, 128))
    _image(tmp_path / "in.jpg")
    tool = load_tool("demo")
    target = tmp_path / "drawn.png"
    written = tool.main(
        [
            "--config-file",
            FOCUS_TINY,
            "--input",
            str(tmp_path / "in.jpg"),
            "--output",
            str(target),
            "--onnx",
            str(graph),
            "--confidence-threshold",
            "0.0",
        ]
    )
    assert written == [str(target)]
    with Image.open(target) as im:
        assert im.size == (120, 90)
