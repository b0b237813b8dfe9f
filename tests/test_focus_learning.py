"""The tiny Focus-DETR learns on the built-in dataset: the foreground loss falls, the kept tokens
cover the ground-truth foreground far better than their share of the tokens, box AP rises.

A short run (small images, 200 iterations) of projects/focus_detr/tools/selection_ablation.py.
"""

import pytest

from projects.focus_detr.tools.selection_ablation import train_and_evaluate


@pytest.mark.slow
def test_tiny_focus_detr_learns():
    result = train_and_evaluate(
        iters=200,
        batch_size=4,
        train_short_sides=(112, 128, 144, 160),
        test_short_side=128,
        max_size=240,
        eval_images=50,
        seed=0,
        log=lambda s: None,
    )
    first, last = result["history"][0], result["history"][-1]
    keep = result["layer_keep_fractions"]  # (0.4, 0.2) of the valid tokens
    # an untrained selector keeps foreground at about the keep fraction; a trained one far above
    assert abs(first["kept_recall"][0] - keep[0]) < 0.15
    assert last["select_loss"] < 0.3 * first["select_loss"]
    for recall, fraction in zip(last["kept_recall"], keep):  # measured: 0.78 / 0.53 at 200 iters
        assert recall > fraction + 0.2, (last["kept_recall"], keep)
    assert last["AP50"] > first["AP50"] + 1.0 and last["AP"] > first["AP"]
