"""Statistics figures: built without pyplot, ≤ 6.4 in wide, every text ≥ 9 pt, colour bars labelled."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from generator.render.stats import (MAX_WIDTH, MIN_FONT, block_similarity_figure, entropy_figure,
                                    mean_distance_figure, positional_map_figure, swin_kernels_figure)

RNG = np.random.default_rng(0)
BLOCKS, HEADS = 6, 4


def figures():
    values = RNG.uniform(0.5, 3.0, size=(BLOCKS, HEADS))
    yield "distance", mean_distance_figure(values, low=values - 0.1, high=values + 0.1, pixels_per_patch=4.0,
                                           uniform_distance=3.6, title="vit: mean distance")
    yield "entropy", entropy_figure(values / 3.0)
    yield "positional", positional_map_figure(RNG.uniform(-0.1, 1.0, size=(BLOCKS, HEADS)))
    yield "positional-wide", positional_map_figure(RNG.uniform(0, 1.0, size=(12, 12)))
    sim = RNG.uniform(-0.2, 0.9, size=BLOCKS - 1)
    yield "similarity", block_similarity_figure(sim, low=sim - 0.1, high=sim + 0.1)
    kernels = RNG.uniform(0.01, 0.05, size=(2, 4, 13, 13))
    yield "kernels", swin_kernels_figure(kernels, [["vertical", "horizontal", "ring", "mixed"]] * 2, stage=1)


@pytest.mark.parametrize("name, fig", list(figures()), ids=lambda v: v if isinstance(v, str) else "")
def test_figure_is_readable(name, fig):
    FigureCanvasAgg(fig).draw()  # creates the tick labels
    assert fig.get_figwidth() <= MAX_WIDTH + 1e-9
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert texts
    small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < MIN_FONT]
    assert not small, small
    if name in ("positional", "positional-wide", "kernels"):
        bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert bars and all(ax.get_ylabel() for ax in bars)


def test_no_pyplot_state_is_left():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    for _ in figures():
        pass
    assert plt.get_fignums() == before
