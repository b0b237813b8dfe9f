"""Equal training budget on the built-in dataset: "DINO + Sparse DETR" vs Focus-DETR at the same
keep ratio, end to end through tools/sweep_keep_ratio.py (same config, one override apart, same
initial weights outside the encoder, same data order). A short run (100 iterations at batch 2,
under a minute on 2 idle cores): the comparison runs and reports AP and the foreground recall of
the kept tokens, each token scorer learns from its own supervision, and Focus-DETR's selector
keeps more of the ground-truth foreground than Sparse DETR's. AP after so few iterations is
near 0 for both; the numbers of the full tiny schedule are in the README."""

import math

import pytest

from focus_detr.engine import REPO_ROOT
from tests.tools_utils import load_tool

TINY = str(REPO_ROOT / "projects/sparse_detr/configs/dino_sparse_tiny_synthetic.py")
ITERS = 100
EVAL_IMAGES = 50
# a smaller per-step cost for CI, both models alike: batch 2, fewer queries
SMALL = [
    "dataloader.train.total_batch_size=2",
    "model.transformer.num_queries=50",
    "model.select_box_nums_for_evaluation=50",
]


@pytest.mark.slow
def test_sparse_vs_focus_at_equal_budget(capsys):
    tool = load_tool("sweep_keep_ratio")
    rows = tool.main(
        [
            "--config-file",
            TINY,
            "--encoders",
            "sparse",
            "focus",
            "--keep-ratios",
            "0.3",
            "--no-flops",
            "--no-latency",
            "--train-iters",
            str(ITERS),
            "--eval-images",
            str(EVAL_IMAGES),
            "--threads",
            "2",
            *SMALL,
        ]
    )
    table = capsys.readouterr().out
    assert "fg recall" in table and "AP" in table
    assert [(r["encoder"], r["keep_ratio"]) for r in rows] == [("sparse", 0.3), ("focus", 0.3)]
    for row in rows:
        for key in ("AP", "AP50", "APs", "APm", "APl"):  # NaN: no object of that size
            assert 0.0 <= row[key] <= 100.0 or (key != "AP" and math.isnan(row[key])), (
                row["encoder"],
                key,
                row[key],
            )
        # foreground on the two finest levels (the tiny test images, <= 160 px, are too small
        # for the coarser levels' scale ranges): a recall for each
        levels = [row[f"fg_level{i}_recall"] for i in range(2)]
        assert all(0.0 <= r <= 1.0 for r in levels), levels
        assert 0.0 <= row["fg_recall_mean"] <= 1.0 and 0.0 <= row["fg_recall_first"] <= 1.0
        assert row["total_loss_last"] < row["total_loss_first"]
    sparse, focus = rows
    # same keep ratio: Sparse DETR keeps 0.3 of the tokens in every layer, so its layers'
    # recall is one number; Focus's cascade keeps 0.4 then 0.2 (2 layers), so its first layer
    # recalls more than its mean
    assert sparse["fg_recall_mean"] == pytest.approx(sparse["fg_recall_first"])
    assert focus["fg_recall_first"] > focus["fg_recall_mean"]
    # Focus-DETR's ground-truth-supervised selector keeps more of the foreground than Sparse
    # DETR's attention-map-supervised one at the same budget (the paper's Fig. 1 / 4). Measured
    # with these settings, seeds 0 / 1 / 2: mean recall Focus 0.549 / 0.603 / 0.578, Sparse
    # 0.365 / 0.410 / 0.361; the margin 0.05 lies well below the smallest measured gap (0.14).
    assert focus["fg_recall_mean"] > sparse["fg_recall_mean"] + 0.05
    assert focus["fg_recall_mean"] > 1.5 * 0.3  # well above the share of kept tokens
    # each scorer learns from its own supervision within the budget
    assert sparse["loss_mask_prediction_last"] < sparse["loss_mask_prediction_first"]
    assert focus["select_loss_last"] < focus["select_loss_first"]
