"""The tools refuse bad arguments while parsing them (before any model is built or timed), with
a message naming the argument; and the sweep's shared-weights check."""

import pytest
import torch
from torch import nn

from tests.tools_utils import FOCUS_TINY, TINY_CONFIG, load_tool


def _parse_error(capsys, parse_args, argv):
    """argparse's error message for `argv` (it exits with status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------------------- sweep_keep_ratio
SWEEP = [
    "--config-file",
    TINY_CONFIG,
    "--encoders",
    "dense",
    "focus",
    "--keep-ratios",
    "0.3",
    "0.5",
]


def test_sweep_checkpoint_names_and_paths(tmp_path, capsys):
    tool = load_tool("sweep_keep_ratio")
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"")
    args = tool.parse_args(
        SWEEP + ["--checkpoint", f"focus@0.3={weights}", "--checkpoint", f"dense={weights}"]
    )
    assert args.checkpoint == [f"focus@0.3={weights}", f"dense={weights}"]
    # the generated name is focus@0.3: 0.30 would be skipped silently
    err = _parse_error(capsys, tool.parse_args, SWEEP + ["--checkpoint", f"focus@0.30={weights}"])
    assert "no model named 'focus@0.30'" in err and "dense, focus@0.3, focus@0.5" in err
    err = _parse_error(capsys, tool.parse_args, SWEEP + ["--checkpoint", f"sparse@0.3={weights}"])
    assert "no model named 'sparse@0.3'" in err  # sparse is not among --encoders
    missing = tmp_path / "nope.pth"
    err = _parse_error(capsys, tool.parse_args, SWEEP + ["--checkpoint", f"focus@0.5={missing}"])
    assert f"file not found: {missing}" in err
    err = _parse_error(capsys, tool.parse_args, SWEEP + ["--checkpoint", str(weights)])
    assert "expected NAME=PATH" in err
    twice = ["--checkpoint", f"dense={weights}"] * 2
    assert "a second checkpoint for 'dense'" in _parse_error(capsys, tool.parse_args, SWEEP + twice)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--train-iters", "-1"], "--train-iters must be non-negative"),
        (["--eval-images", "-3"], "--eval-images must be non-negative"),
        (["--repeats", "0"], "--repeats must be positive"),
    ],
)
def test_sweep_rejects_negative_counts(capsys, argv, message):
    tool = load_tool("sweep_keep_ratio")
    assert message in _parse_error(capsys, tool.parse_args, SWEEP + argv)


def test_sweep_shared_weights_cover_everything_outside_the_encoder():
    tool = load_tool("sweep_keep_ratio")

    def detector(extra_head=False):
        model = nn.Module()
        model.transformer = nn.Module()
        model.transformer.encoder = nn.Linear(2, 2)
        model.head = nn.Linear(2, 2)
        if extra_head:
            model.extra = nn.Linear(2, 2)
        return model

    reference = detector().state_dict()
    shared = {k: v for k, v in reference.items() if not k.startswith("transformer.encoder.")}
    model = detector()
    tool.load_shared_init(model, shared, "focus@0.3")  # the encoder's own keys are not shared
    assert torch.equal(model.head.weight, reference["head.weight"])
    with pytest.raises(RuntimeError, match=r"focus@0.3: .*missing \['extra.weight', 'extra.bias"):
        tool.load_shared_init(detector(extra_head=True), shared, "focus@0.3")
    with pytest.raises(RuntimeError, match=r"unexpected \['stray'\]"):
        tool.load_shared_init(detector(), {**shared, "stray": torch.zeros(1)}, "dense")


# --------------------------------------------------------------------------------- benchmark
def test_benchmark_metrics_files(tmp_path, capsys):
    tool = load_tool("benchmark")
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"bbox/AP": 1.0}\n')
    two = ["--config-file", TINY_CONFIG, "--config-file", FOCUS_TINY]
    other = tmp_path / "results.json"
    other.write_text('{"bbox": {"AP": 2.5}}')
    args = tool.parse_args(two + ["--metrics", str(metrics), str(other)])
    assert args.metrics == [str(metrics), str(other)] and args.metrics_ap == [1.0, 2.5]
    err = _parse_error(capsys, tool.parse_args, two + ["--metrics", str(metrics)])
    assert "1 metrics files for 2 configs" in err
    missing = tmp_path / "missing.json"
    err = _parse_error(capsys, tool.parse_args, two + ["--metrics", str(metrics), str(missing)])
    assert f"--metrics {missing}: metrics file not found: {missing}" in err
    broken = tmp_path / "broken.json"
    broken.write_text('{"bbox/AP": 1.0}\n{"bbox/AP": \n')  # a run killed mid-write
    err = _parse_error(capsys, tool.parse_args, two + ["--metrics", str(metrics), str(broken)])
    assert f"{broken} is neither a JSON object nor JSON lines" in err
    err = _parse_error(
        capsys, tool.parse_args, two + ["--metrics", str(metrics), str(metrics), "--eval"]
    )
    assert "--eval and --metrics" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset-inputs", "-1"], "--dataset-inputs must be at least 1"),
        (
            ["--dataset-inputs", "0"],
            "--dataset-inputs must be at least 1 (the number of test images), got 0; leave it out",
        ),
        (["--threads", "0"], "--threads must be positive, got 0"),
        (["--input-size", "0", "64"], "--input-size must be positive, got [0, 64]"),
    ],
)
def test_benchmark_bad_counts(capsys, argv, message):
    tool = load_tool("benchmark")
    assert message in _parse_error(capsys, tool.parse_args, ["--config-file", TINY_CONFIG] + argv)


def test_benchmark_label_count(capsys):
    tool = load_tool("benchmark")
    argv = ["--config-file", TINY_CONFIG, "--labels", "a", "b"]
    assert "2 labels for 1 configs" in _parse_error(capsys, tool.parse_args, argv)


# ---------------------------------------------------------------------------- benchmark_msda
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeat", "0"], "argument --repeat: must be at least 1, got 0"),
        (["--repeat", "-2"], "argument --repeat: must be at least 1, got -2"),
        (["--warmup", "-1"], "argument --warmup: must be at least 0, got -1"),
        (["--batch", "0"], "argument --batch: must be at least 1, got 0"),
        (["--batch", "two"], "argument --batch: not an integer: 'two'"),
        (["--threads", "0"], "argument --threads: must be at least 1, got 0"),
        (["--dtype", "fp32"], "argument --dtype: unknown 'fp32'"),
        (["--dtype", "float32,int32"], "argument --dtype: unknown 'int32'"),
        (["--shapes", "decoder,encoder50"], "argument --shapes: unknown 'encoder50'"),
    ],
)
def test_benchmark_msda_rejects_bad_arguments(capsys, argv, message):
    tool = load_tool("benchmark_msda")
    assert message in _parse_error(capsys, tool.parse_args, argv)


def test_benchmark_msda_parses_lists_and_counts():
    tool = load_tool("benchmark_msda")
    args = tool.parse_args(
        ["--dtype", "float32,bfloat16", "--shapes", "decoder", "--repeat", "3", "--warmup", "0"]
    )
    assert (args.dtype, args.shapes, args.repeat, args.warmup) == (
        ["float32", "bfloat16"],
        ["decoder"],
        3,
        0,
    )
    assert tool.parse_args([]).shapes == list(tool.SHAPES)  # every shape by default
