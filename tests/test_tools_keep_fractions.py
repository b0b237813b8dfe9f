"""The tools say what each encoder layer keeps: Focus-DETR's keep ratio is the mean of its
cascade (the tiny model keeps 40% then 20% for keep_ratio 0.3), Sparse DETR keeps it in every
layer; the fractions match the selection a forward pass makes."""

import pytest
import torch

from focus_detr.analysis.model_io import describe_encoder, image_list, keep_description
from tests.tools_utils import DENSE, FOCUS, FOCUS_TINY, SMALL_INPUT, SPARSE, load_tool, tiny_model


@pytest.mark.parametrize(
    "override, expected, text",
    [
        (FOCUS, [0.4, 0.2], "keep ratio 0.3 = mean of the layers' 0.40, 0.20"),
        (SPARSE, [0.3, 0.3], "keep ratio 0.3 in each of 2 layers"),
        (DENSE, [1.0, 1.0], "keeps every token"),
    ],
)
def test_layer_keep_fractions_match_the_selection(override, expected, text):
    _, model = tiny_model(override)
    info = describe_encoder(model)
    assert info["layer_keep_fractions"] == pytest.approx(expected)
    assert keep_description(info) == text
    if override == DENSE:
        return
    x = {
        "image": torch.rand(3, *SMALL_INPUT) * 255,
        "height": SMALL_INPUT[0],
        "width": SMALL_INPUT[1],
    }
    with torch.no_grad():
        batch = image_list(model, [x])
        out = model.compute_outputs(batch)
    selection = out["encoder_output"].selection
    valid = int(selection.valid_tokens().sum())
    for fraction, count in zip(expected, selection.counts()[0].tolist()):
        assert abs(count - fraction * valid) <= 1  # the published count adds one token


def test_analyze_model_prints_the_layer_fractions(capsys):
    tool = load_tool("analyze_model")
    tool.main(["--config-file", FOCUS_TINY, "--tasks", "parameter", "--device", "cpu"])
    assert "keep ratio 0.3 = mean of the layers' 0.40, 0.20" in capsys.readouterr().out
