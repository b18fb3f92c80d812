"""Per-head attention grids (the study's Figure 1): one row per block, one column per head."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .style import new_figure


def head_grid_figure(
    maps: np.ndarray,
    view: np.ndarray,
    *,
    scale: str = "row",
    title: str = "",
    query_label: str = "CLS",
) -> Figure:
    """Draw a block × head grid of attention maps beside the input image.

    Args:
        maps: (blocks, heads, h, w) attention of the query token to each patch.
        view: (H, W, 3) uint8 input image as the model saw it.
        scale: "row" shares one colour scale per block (one colourbar per row);
            "panel" stretches each panel to its own min–max.
        title: figure title.
        query_label: which query's attention is drawn, for the axis label.
    """
    blocks, heads = maps.shape[:2]
    cell = 0.72 if heads > 6 else 0.95
    image_width = max(1.6, min(3.0, 0.25 * blocks + 1.0))
    fig = new_figure(image_width + cell * heads + 0.6, max(2.2, cell * blocks + 0.7))
    left, right = fig.subfigures(1, 2, width_ratios=[image_width, cell * heads + 0.6], wspace=0.02)
    ax_img = left.add_subplot(1, 1, 1)
    ax_img.imshow(view, interpolation="lanczos" if view.shape[0] >= 64 else "nearest")
    ax_img.set_title("input", pad=3)
    ax_img.set_axis_off()
    ax_img.set_anchor("N")  # the image sits at the top, beside block 0
    grid = right.add_gridspec(blocks, heads + 1, width_ratios=[1.0] * heads + [0.08], wspace=0.06, hspace=0.12)
    for b in range(blocks):
        row = maps[b]
        vmin, vmax = (float(row.min()), float(row.max())) if scale == "row" else (None, None)
        image = None
        for h in range(heads):
            ax = right.add_subplot(grid[b, h])
            image = ax.imshow(row[h], vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if b == 0:
                ax.set_title(f"head {h}", pad=2)
            if h == 0:
                ax.set_ylabel(f"block {b}", labelpad=2)
        if scale == "row" and image is not None:
            cax = right.add_subplot(grid[b, heads])
            bar = right.colorbar(image, cax=cax)
            bar.ax.tick_params(labelsize=5, length=2, pad=1)
            bar.set_ticks([vmin, vmax])
            bar.ax.set_yticklabels([f"{vmin:.2g}", f"{vmax:.2g}"])
    right.supxlabel(f"attention of {query_label} to each patch", fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
