"""Perturbation figures: the variant strip (the study's Figure 6) and the original top-1 class's
probability across variants."""

from __future__ import annotations

import numpy as np

from .lime import wrap_title
from .style import attach_data, new_figure
from .text import fmt_pct


def variant_figure(thumbnails: list[np.ndarray], names: list[str], original_probs: np.ndarray, top1: str, title: str):
    """Args:
    thumbnails: one (h, w, 3) uint8 image per variant, the original first.
    original_probs: (variants,) probability of the original's top-1 class in each variant.
    """
    count = len(thumbnails)
    fig = new_figure(1.7 * count + 2.8, 2.6)
    grid = fig.add_gridspec(1, count + 2, width_ratios=[1.0] * count + [0.55, 1.6], wspace=0.15)  # a spacer for the labels
    for i, (thumb, name) in enumerate(zip(thumbnails, names)):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(thumb, interpolation="nearest" if thumb.shape[0] < 64 else "antialiased")
        ax.set_title(wrap_title(name, 16), pad=3)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[0, count + 1])
    y = np.arange(count)
    ax.barh(y, 100.0 * original_probs, color="#3b6ea5")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"P({top1}) %")
    for yi, p in zip(y, original_probs):
        ax.text(min(100.0 * p + 2, 72), yi, fmt_pct(p), va="center")
    ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title)
    return attach_data(fig, variants=list(names), probability_of_original_top1=original_probs, original_top1=top1)
