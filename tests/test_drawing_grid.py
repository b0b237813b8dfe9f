"""Figures people can read: small panels enlarged to at least MIN_PANEL pixels, long titles and
captions wrapped instead of cut, one legend per figure, level colours distinct from the
agreement and ground-truth colours, a light background dim."""

import numpy as np
from PIL import Image

from focus_detr.analysis.drawing import (
    AGREEMENT_COLORS,
    GROUND_TRUTH_COLOR,
    LEVEL_COLORS,
    MIN_PANEL,
    dim,
    level_legend,
    save_grid,
)


def test_small_panels_enlarged_titles_wrapped_legend_drawn(tmp_path):
    panel = np.full((60, 80, 3), 200, np.uint8)
    short = save_grid(str(tmp_path / "a.png"), [[(panel, "a"), (panel, "b")]], "t")
    assert short[0] == 2 * 80 * 5 and short[0] // 2 >= MIN_PANEL  # 80 px x 5 = 400 px
    title = "a title far longer than the figure is wide, " * 6
    caption = "a caption longer than its panel is wide " * 3
    legend = level_legend(4, (8, 16, 32, 64))
    long = save_grid(str(tmp_path / "b.png"), [[(panel, caption), (panel, "b")]], title, legend)
    assert long[0] == short[0] and long[1] > short[1] + 3 * 18  # wrapped lines add height
    with Image.open(tmp_path / "b.png") as im:
        pixels = np.asarray(im.convert("RGB"))
    bottom = pixels[-18:].reshape(-1, 3)
    for color, _ in legend:  # the legend swatches are drawn at the bottom
        assert (bottom == np.asarray(color)).all(1).any(), color


def test_one_meaning_per_colour_and_a_light_dim():
    levels = set(LEVEL_COLORS)
    assert not levels & set(AGREEMENT_COLORS.values()) and GROUND_TRUTH_COLOR not in levels
    assert dim(np.full((1, 1, 3), 200, np.uint8))[0, 0, 0] >= 120  # not near black
