"""Long silent work reports progress: FLOP counting in analyze_model, the sweep's training
(iteration, loss, ETA); and the progress line's arithmetic."""

import io

from focus_detr.cli import Progress
from tests.tools_utils import FOCUS_TINY, SMALL_INPUT, TINY_CONFIG, load_tool


def test_progress_line_and_throttling():
    clock = iter([0.0, 10.0, 11.0, 20.0, 30.0]).__next__
    stream = io.StringIO()
    progress = Progress(4, "[x] training", min_interval_s=5.0, stream=stream)
    progress._clock, progress.start = clock, 0.0
    progress.update(1, "loss 2.0")  # t=0: first line always
    progress.update(2)  # t=10: due
    progress.update(3)  # t=11: too soon, skipped
    progress.update(4)  # t=20: the last step, always
    lines = stream.getvalue().splitlines()
    assert lines == [
        "[x] training: 1/4, loss 2.0, elapsed 0 s, ETA 0 s",
        "[x] training: 2/4, elapsed 10 s, ETA 10 s",
        "[x] training: 4/4, elapsed 20 s, ETA 0 s",
    ]


def test_analyze_model_reports_flop_counting(capsys):
    tool = load_tool("analyze_model")
    tool.main(
        ["--config-file", FOCUS_TINY, "--tasks", "flop", "--num-inputs", "2", "--device", "cpu"]
    )
    out = capsys.readouterr().out
    assert "flop count: tracing the model on 2 input(s)" in out
    assert "flop count (fvcore traces the model): 1/2" in out
    assert "flop count (fvcore traces the model): 2/2" in out


def test_sweep_training_reports_iterations(capsys):
    tool = load_tool("sweep_keep_ratio")
    tool.main(
        [
            "--config-file",
            TINY_CONFIG,
            "--encoders",
            "focus",
            "--keep-ratios",
            "0.3",
            "--train-iters",
            "2",
            "--eval-images",
            "1",
            "--no-latency",
            "--no-flops",
            "--device",
            "cpu",
            "--image-size",
            *map(str, SMALL_INPUT),
        ]
    )
    out = capsys.readouterr().out
    assert "[focus@0.3] training iteration: 1/2, total_loss" in out
    assert "[focus@0.3] training iteration: 2/2" in out and "ETA" in out
