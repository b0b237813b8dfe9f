"""The tools answer `--help` (with their usage examples) and refuse misplaced options before
torch or detectron2 is imported; the shared override helpers of `focus_detr.cli`."""

import subprocess
import sys

import pytest

from focus_detr.cli import check_overrides, is_override, split_overrides, tool_parser
from tests.tools_utils import REPO_ROOT

TOOLS = (
    "train_net",
    "demo",
    "sweep_keep_ratio",
    "plot_ap_flops",
    "visualize_tokens",
    "label_statistics",
    "evaluate_export",
    "analyze_model",
    "benchmark",
    "benchmark_msda",
    "convert_release",
)

# runs a tool as __main__ and reports, after it exits, whether torch got imported
_RUN = """
import runpy, sys
path = sys.argv[1]
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_path(path, run_name="__main__")
except SystemExit as e:
    code = e.code
except Exception as e:  # the tool's own error, reported like an uncaught one
    import traceback
    traceback.print_exc()
    code = type(e).__name__
print("TORCH-IMPORTED" if "torch" in sys.modules else "NO-TORCH", code)
"""


def _run_tool(name, *argv):
    path = str(REPO_ROOT / "tools" / f"{name}.py")
    done = subprocess.run(
        [sys.executable, "-c", _RUN, path, *argv],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    return done.stdout, done.stderr


@pytest.mark.parametrize("name", TOOLS)
def test_help_shows_examples_without_importing_torch(name):
    out, err = _run_tool(name, "--help")
    assert out.rstrip().endswith("NO-TORCH 0"), (out, err)
    assert f"python tools/{name}.py" in out  # the docstring's examples, as the epilog


def test_train_net_help_shows_lazyconfig_examples():
    out, _ = _run_tool("train_net", "--help")
    assert "--config-file projects/focus_detr/configs/focus_detr_tiny_synthetic.py" in out
    assert "train.init_checkpoint=" in out
    assert ".yaml" not in out  # detectron2's yacs examples are not shown


@pytest.mark.parametrize(
    "name, argv",
    [
        ("train_net", ["--config-file", "x.py", "train.max_iter=3", "--resume"]),
        (
            "analyze_model",
            [
                "--config-file",
                "x.py",
                "--tasks",
                "flop",
                "--num-inputs",
                "1",
                "a.b=1",
                "--device",
                "cpu",
            ],
        ),
        (
            "demo",
            [
                "--config-file",
                "x.py",
                "--input",
                "a.jpg",
                "--output",
                "o",
                "a.b=1",
                "--device",
                "cpu",
            ],
        ),
    ],
)
def test_an_option_after_the_overrides_is_a_parse_error(name, argv):
    out, err = _run_tool(name, *argv)
    assert out.rstrip().endswith("NO-TORCH 2"), (out, err)
    option = argv[-1] if argv[-1].startswith("--") else argv[-2]
    assert f"option {option} comes after the key=value overrides" in err


def test_override_helpers(capsys):
    assert is_override("train.max_iter=3") and is_override("+model.new_key=[1,2]")
    assert is_override("a.list[0]=3") and not is_override("--resume")
    assert not is_override("photo.jpg") and not is_override("=3")
    parser = tool_parser(__doc__)
    assert check_overrides(parser, ("a=1", "b.c=2")) == ["a=1", "b.c=2"]
    with pytest.raises(SystemExit):
        check_overrides(parser, ["a=1", "oops"])
    assert "'oops' is not a key=value config override" in capsys.readouterr().err
    assert split_overrides(["a.jpg", "train.init_checkpoint=m.pth", "b/"]) == (
        ["a.jpg", "b/"],
        ["train.init_checkpoint=m.pth"],
    )


def test_split_overrides_keeps_existing_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x=1").write_text("")  # a file whose name reads as an override
    assert split_overrides(["x=1", "y=2"]) == (["x=1"], ["y=2"])


@pytest.mark.parametrize(
    "name, argv",
    [
        ("analyze_model", ["--config-file", "missing.py", "--tasks", "parameter"]),
        ("train_net", ["--config-file", "missing.py"]),
    ],
)
def test_no_torch_jit_deprecation_warning(name, argv):
    """fvcore's import-time `torch.jit.script` FutureWarning (via detectron2) is filtered."""
    out, err = _run_tool(name, *argv)
    assert "TORCH-IMPORTED" in out, (out, err)  # the tool got past parsing and imported torch
    assert "missing.py" in err  # and stopped on the missing config, naming it
    assert "torch.jit.script" not in err and "FutureWarning" not in err
