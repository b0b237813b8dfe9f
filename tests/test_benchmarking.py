"""The benchmark's library (focus_detr.analysis.benchmarking) used directly, without the tool:
config labels, and the anchor table's conditions (size, setting note, scaled times)."""

from focus_detr.analysis import benchmarking
from focus_detr.analysis.published import ANCHOR_INPUT_SIZE


def test_config_labels_are_unique_and_name_the_overrides():
    specs = [["a/focus.py"], ["b/focus.py"], ["focus.py", "model.x.fold_backbone_norms=False"]]
    assert benchmarking.config_labels(specs) == [
        "focus",
        "focus'",
        "focus[fold_backbone_norms=False]",
    ]
    assert benchmarking.config_labels(specs, ["x", "y", "z"]) == ["x", "y", "z"]


def _summary():
    return {
        "mine": dict(
            info={"method": "focus"},
            seconds={"median": 1.05},
            parts_s={"backbone": 0.4},
            gflops=80.0,
        )
    }


def test_anchor_table_only_at_the_anchors_size_and_notes_the_setting():
    summary = _summary()
    assert benchmarking.anchor_table(summary, ("cpu", 2, "wall"), (64, 96)) == ""
    assert benchmarking.anchor_table(summary, ("cpu", 2, "wall"), ANCHOR_INPUT_SIZE, 4) == ""
    assert "published_s_scaled" not in summary["mine"]
    same = benchmarking.anchor_table(summary, ("cpu", 2, "wall"), ANCHOR_INPUT_SIZE)
    assert "same setting as the anchors" in same and "| mine" in same
    assert summary["mine"]["published_s_scaled"] is None  # no calibration: nothing scaled
    other = benchmarking.anchor_table(_summary(), ("cpu", 4, "wall"), ANCHOR_INPUT_SIZE)
    assert "NOT the anchors' setting" in other


def test_anchor_table_scales_by_the_calibration():
    summary = _summary()
    anchor_s = benchmarking.PUBLISHED_ANCHORS["focus"]["cpu_s"]
    benchmarking.anchor_table(
        summary, ("cpu", 2, "wall"), ANCHOR_INPUT_SIZE, calibration={"factor": 1.5}
    )
    assert summary["mine"]["published_s_scaled"] == anchor_s * 1.5
