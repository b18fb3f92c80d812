"""Rollout figures: fusions side by side (the study's Figure 2), the progression over blocks
(Figure 3), and the gradient-weighted map beside the plain one."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .overlay import draw_overlay
from .lime import wrap_title
from .style import attach_data, label_colorbar, new_figure
from .text import short_class_name


def _image_panel(ax, view):
    ax.imshow(view, interpolation="nearest" if view.shape[0] < 64 else "antialiased")
    ax.set_title("input", pad=3)
    ax.set_axis_off()


def fusion_figure(view: np.ndarray, masks: np.ndarray, fusions: list[str], ratios: list[float], title: str) -> Figure:
    """Args: masks (ratios, fusions, h, w). One row per discard ratio, one column per fusion."""
    rows, cols = len(ratios), len(fusions)
    fig = new_figure(1.9 * (cols + 1) + 0.4, 1.9 * rows + 0.5)
    grid = fig.add_gridspec(rows, cols + 2, width_ratios=[1.0] * (cols + 1) + [0.06], wspace=0.08, hspace=0.15)
    mappable = None
    for r, ratio in enumerate(ratios):
        _image_panel(fig.add_subplot(grid[r, 0]), view)
        for c, fusion in enumerate(fusions):
            ax = fig.add_subplot(grid[r, c + 1])
            mappable = draw_overlay(ax, view, masks[r, c], f"{fusion} fusion\ndiscard {ratio:g}")
    label_colorbar(fig.colorbar(mappable, cax=fig.add_subplot(grid[:, cols + 1])), "rollout / its maximum")
    fig.suptitle(title)
    return attach_data(fig, rollout=masks, discard_ratios=list(ratios), fusions=list(fusions),
                       note="rollout of the CLS token to each patch; the figure scales each panel to its maximum")


def progression_figure(view: np.ndarray, masks: np.ndarray, blocks: list[int], title: str) -> Figure:
    """Args: masks (steps, h, w), the rollout after each block in ``blocks``."""
    steps = len(blocks)
    cols = min(steps + 1, 6)
    rows = int(np.ceil((steps + 1) / cols))
    fig = new_figure(1.6 * cols + 0.4, 1.7 * rows + 0.5)
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1.0] * cols + [0.06], wspace=0.08, hspace=0.2)
    _image_panel(fig.add_subplot(grid[0, 0]), view)
    mappable = None
    for i, block in enumerate(blocks):
        r, c = divmod(i + 1, cols)
        mappable = draw_overlay(fig.add_subplot(grid[r, c]), view, masks[i], f"to block {block}")
    for i in range(steps + 1, rows * cols):  # empty cells of the last row
        fig.add_subplot(grid[divmod(i, cols)]).set_axis_off()
    label_colorbar(fig.colorbar(mappable, cax=fig.add_subplot(grid[:, cols])), "rollout / its maximum")
    fig.suptitle(title)
    return attach_data(fig, rollout_after_block=masks, blocks=list(blocks))


def gradient_figure(view: np.ndarray, plain: np.ndarray, weighted: np.ndarray, target: str, title: str) -> Figure:
    fig = new_figure(6.4, 2.7)
    grid = fig.add_gridspec(1, 4, width_ratios=[1, 1, 1, 0.06], wspace=0.08)
    _image_panel(fig.add_subplot(grid[0, 0]), view)
    draw_overlay(fig.add_subplot(grid[0, 1]), view, plain, "rollout (mean)")
    mappable = draw_overlay(fig.add_subplot(grid[0, 2]), view, weighted,
                            wrap_title(f"gradient-weighted → {short_class_name(target)}", 20))
    label_colorbar(fig.colorbar(mappable, cax=fig.add_subplot(grid[0, 3])), "map / its maximum")
    fig.suptitle(title)
    return attach_data(fig, plain_rollout=plain, gradient_weighted=weighted, target=target)
