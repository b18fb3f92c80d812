"""Per-head attention grids (the study's Figure 1): one row per block, one column per head."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .style import attach_data, new_figure
from .text import fmt_number


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

    Heads and blocks are numbered from 0; only the first column and row spell out "block" and
    "head", so the labels stay short enough to be read at the column width with many heads.
    """
    blocks, heads = maps.shape[:2]
    cell = 0.72 if heads > 6 else 0.95
    # margins in inches around the panel grid: block labels, head titles, the bar's ticks and label
    left_in, top_in, bottom_in = 0.45, 0.75, 0.45
    right_in = 1.35 if scale == "row" else 0.1
    image_width = max(1.4, min(2.4, 0.2 * blocks + 1.0))
    grid_width = cell * (heads + 0.08)
    width_right = left_in + grid_width + right_in
    height = cell * blocks + top_in + bottom_in
    fig = new_figure(image_width + width_right, height)
    left, right = fig.subfigures(1, 2, width_ratios=[image_width, width_right], wspace=0.0)
    side = image_width - 0.2  # the input, square, level with block 0
    ax_img = left.add_axes((0.1 / image_width, 1 - (top_in + side) / height, side / image_width, side / height))
    ax_img.imshow(view, interpolation="lanczos" if view.shape[0] >= 64 else "nearest")
    ax_img.set_title("input", pad=3)
    ax_img.set_axis_off()
    grid = right.add_gridspec(blocks, heads + 1, width_ratios=[1.0] * heads + [0.08], wspace=0.06, hspace=0.06,
                              left=left_in / width_right, right=1 - right_in / width_right,
                              top=1 - top_in / height, bottom=bottom_in / height)
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
                ax.set_title(f"head {h}" if h == 0 else str(h), pad=2)
            if h == 0:
                ax.set_ylabel(f"block {b}" if b == 0 else str(b), labelpad=2)
        if scale == "row" and image is not None:
            cax = right.add_subplot(grid[b, heads])
            colourbar = right.colorbar(image, cax=cax)
            colourbar.ax.tick_params(length=2, pad=1)
            colourbar.set_ticks([vmin, vmax])
            # inside the row's own height, so neighbouring rows' labels never meet
            for text, va in zip(colourbar.ax.set_yticklabels([fmt_number(vmin, 2), fmt_number(vmax, 2)]),
                                ("bottom", "top")):
                text.set_verticalalignment(va)
    if scale == "row":
        right.text(1 - 0.05 / width_right, 0.5 * (1 + (bottom_in - top_in) / height), "attention weight (one scale per block)",
                   rotation=90, ha="right", va="center", transform=right.transSubfigure)
    right.text(0.5 * (1 + (left_in - right_in) / width_right), 0.1 / height, f"attention of {query_label} to each patch",
               ha="center", va="bottom", transform=right.transSubfigure)
    if title:
        fig.suptitle(title)
    return attach_data(fig, attention=maps, blocks=list(range(blocks)), heads=list(range(heads)),
                       query=query_label, scale=scale)
