"""Rollout figures: fusions side by side (the study's Figure 2), the progression over blocks
(Figure 3), and the gradient-weighted map beside the plain one."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .overlay import draw_overlay
from .style import new_figure


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
            mappable = draw_overlay(ax, view, masks[r, c], f"{fusion} fusion, discard {ratio:g}")
    fig.colorbar(mappable, cax=fig.add_subplot(grid[:, cols + 1]), label="rollout / its maximum")
    fig.suptitle(title)
    return fig


def progression_figure(view: np.ndarray, masks: np.ndarray, blocks: list[int], title: str) -> Figure:
    """Args: masks (steps, h, w), the rollout after each block in ``blocks``."""
    steps = len(blocks)
    cols = min(steps + 1, 7)
    rows = int(np.ceil((steps + 1) / cols))
    fig = new_figure(1.6 * cols + 0.4, 1.7 * rows + 0.5)
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1.0] * cols + [0.06], wspace=0.08, hspace=0.2)
    _image_panel(fig.add_subplot(grid[0, 0]), view)
    mappable = None
    for i, block in enumerate(blocks):
        r, c = divmod(i + 1, cols)
        mappable = draw_overlay(fig.add_subplot(grid[r, c]), view, masks[i], f"up to block {block}")
    fig.colorbar(mappable, cax=fig.add_subplot(grid[:, cols]), label="rollout / its maximum")
    fig.suptitle(title)
    return fig


def gradient_figure(view: np.ndarray, plain: np.ndarray, weighted: np.ndarray, target: str, title: str) -> Figure:
    fig = new_figure(6.4, 2.5)
    grid = fig.add_gridspec(1, 4, width_ratios=[1, 1, 1, 0.06], wspace=0.08)
    _image_panel(fig.add_subplot(grid[0, 0]), view)
    draw_overlay(fig.add_subplot(grid[0, 1]), view, plain, "rollout (mean)")
    mappable = draw_overlay(fig.add_subplot(grid[0, 2]), view, weighted, f"gradient-weighted\n→ {target}")
    fig.colorbar(mappable, cax=fig.add_subplot(grid[0, 3]), label="map / its maximum")
    fig.suptitle(title)
    return fig
