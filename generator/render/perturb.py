"""Perturbation figures: the variant strip (the study's Figure 6) and the original top-1 class's
probability across variants."""

from __future__ import annotations

import numpy as np

from .lime import wrap_title
from .style import attach_data, new_figure
from .text import fmt_pct

WARN_COLOUR = "#b3261e"


def variant_figure(thumbnails: list[np.ndarray], views: list[np.ndarray] | None, names: list[str],
                   original_probs: np.ndarray, top1: str, title: str, input_box: list[float] | None = None,
                   edit_boxes: list[list[float] | None] | None = None, outside: list[float | None] | None = None,
                   warn_above: float = 0.1):
    """Args:
    thumbnails: one (h, w, 3) uint8 image per variant, the original first (the whole photo).
    views: one (h, w, 3) uint8 image per variant: what the model sees (None: one row only).
    original_probs: (variants,) probability of the original's top-1 class in each variant.
    input_box: the model's input on the thumbnails, (x0, y0, x1, y1) in thumbnail pixels; drawn dashed.
    edit_boxes: per variant, the edited region's extent on the thumbnail (None: none); drawn solid.
    outside: per variant, the share of the edited region outside the model's input (None: not known).
    warn_above: shares above this are written in red.
    """
    from matplotlib.patches import Rectangle

    count = len(thumbnails)
    rows = 2 if views is not None else 1
    fig = new_figure(1.7 * count + 2.8, 2.6 + 1.7 * (rows - 1))
    grid = fig.add_gridspec(rows, count + 2, width_ratios=[1.0] * count + [0.55, 1.6], wspace=0.15,
                            hspace=0.35)  # a spacer column for the labels
    for i, (thumb, name) in enumerate(zip(thumbnails, names)):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(thumb, interpolation="nearest" if thumb.shape[0] < 64 else "antialiased")
        share = outside[i] if outside else None
        label = wrap_title(name, 16) if share is None else f"{wrap_title(name, 16)}\n{100 * share:.0f}% outside"
        ax.set_title(label, pad=3, color=WARN_COLOUR if share is not None and share > warn_above else "black")
        if input_box:
            x0, y0, x1, y1 = input_box
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="#f5c400",
                                   linestyle="--", linewidth=1.2))
        box = edit_boxes[i] if edit_boxes else None
        if box:
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="#00b4d8",
                                   linewidth=1.0))
        ax.set_xlim(-0.5, thumb.shape[1] - 0.5)
        ax.set_ylim(thumb.shape[0] - 0.5, -0.5)
        ax.set_axis_off()
        if views is not None:
            ax = fig.add_subplot(grid[1, i])
            ax.imshow(views[i], interpolation="nearest" if views[i].shape[0] < 64 else "antialiased")
            if i == 0:
                ax.set_title("model input", pad=3, fontsize=7)
            ax.set_axis_off()
    ax = fig.add_subplot(grid[:, count + 1])
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
