"""Swin figures: window-attention maps with window borders and query patches (the study's
Figure 4), and the Swin rollout with its per-stage progression."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .overlay import OVERLAY_CMAP, draw_overlay, scaled
from .style import attach_data, label_colorbar, new_figure

WINDOW_COLOUR = "red"


def _window_lines(ax, grid, window, shift, scale_y, scale_x):
    """Draw window borders (in the image's own frame: shifted borders are offset by −shift)."""
    (h, w), (wh, ww), (sh, sw) = grid, window, shift
    for k in range(h // wh + 1):
        y = ((k * wh - sh) % h) * scale_y
        if 0 < y < h * scale_y:
            ax.axhline(y, color=WINDOW_COLOUR, linewidth=0.8)
    for k in range(w // ww + 1):
        x = ((k * ww - sw) % w) * scale_x
        if 0 < x < w * scale_x:
            ax.axvline(x, color=WINDOW_COLOUR, linewidth=0.8)


def window_map_figure(
    view: np.ndarray,
    maps: np.ndarray,
    queries: np.ndarray,
    geometry: dict,
    labels: list[str],
    raw: bool,
    title: str,
) -> Figure:
    """Args:
    view: (H, W, 3) input image.
    maps: (panels, h, w) recombined query attention on the stage grid (heads, then their mean).
    queries: (windows, 2) grid (row, col) of each window's query patch.
    geometry: {"grid", "window", "shift"} of the block.
    """
    panels = len(labels)
    cols = min(panels, 6)
    rows = int(np.ceil(panels / cols))
    fig = new_figure(1.75 * cols + 0.5, 1.85 * rows + 0.5)
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1.0] * cols + [0.06], wspace=0.06, hspace=0.2)
    gh, gw = geometry["grid"]
    height, width = (gh, gw) if raw else view.shape[:2]
    sy, sx = height / gh, width / gw
    mappable = None
    for i, label in enumerate(labels):
        ax = fig.add_subplot(grid[divmod(i, cols)])
        if raw:
            mappable = ax.imshow(scaled(maps[i]), cmap=OVERLAY_CMAP, vmin=0, vmax=1, interpolation="nearest",
                                 extent=(0, gw, gh, 0))
            ax.set_axis_off()
            ax.set_title(label, pad=3)
        else:
            mappable = draw_overlay(ax, view, maps[i], label, alpha=0.65)
        _window_lines(ax, (gh, gw), geometry["window"], geometry["shift"], sy, sx)
        for r, c in queries:
            ax.add_patch(Rectangle((c * sx, r * sy), sx, sy, fill=False, edgecolor=WINDOW_COLOUR, linewidth=0.9))
    for i in range(panels, rows * cols):  # empty cells of the last row
        fig.add_subplot(grid[divmod(i, cols)]).set_axis_off()
    label_colorbar(fig.colorbar(mappable, cax=fig.add_subplot(grid[:, cols])), "attention / its maximum")
    fig.suptitle(title)
    return attach_data(fig, attention=maps, panels=list(labels), query_patches=queries, geometry=geometry)


def swin_rollout_figure(view: np.ndarray, relevance: np.ndarray, progression: np.ndarray, title: str) -> Figure:
    """Args: relevance (h, w) over the first stage's grid; progression (stages, h, w)."""
    stages = progression.shape[0]
    fig = new_figure(1.8 * (stages + 2) + 0.4, 2.5)
    grid = fig.add_gridspec(1, stages + 3, width_ratios=[1.0] * (stages + 2) + [0.06], wspace=0.08)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(view, interpolation="nearest" if view.shape[0] < 64 else "antialiased")
    ax.set_title("input", pad=3)  # (its own axes: no overlay, so the default frame is right)
    ax.set_axis_off()
    draw_overlay(fig.add_subplot(grid[0, 1]), view, relevance, "Swin rollout")
    mappable = None
    for s in range(stages):
        mappable = draw_overlay(fig.add_subplot(grid[0, s + 2]), view, progression[s], f"after stage {s + 1}")
    label_colorbar(fig.colorbar(mappable, cax=fig.add_subplot(grid[0, stages + 2])), "relevance / its maximum")
    fig.suptitle(title)
    return attach_data(fig, rollout=relevance, after_stage=progression)
