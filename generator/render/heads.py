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
    image_width = max(1.4, min(2.4, 0.2 * blocks + 1.0))
    bar = 0.9 if scale == "row" else 0.0
    fig = new_figure(image_width + cell * heads + bar + 0.4, max(2.4, cell * blocks + 1.0))
    left, right = fig.subfigures(1, 2, width_ratios=[image_width, cell * heads + bar + 0.4], wspace=0.02)
    ax_img = left.add_subplot(1, 1, 1)
    ax_img.imshow(view, interpolation="lanczos" if view.shape[0] >= 64 else "nearest")
    ax_img.set_title("input", pad=3)
    ax_img.set_axis_off()
    ax_img.set_anchor("N")  # the image sits at the top, beside block 0
    grid = right.add_gridspec(blocks, heads + 1, width_ratios=[1.0] * heads + [0.08], wspace=0.06, hspace=0.12,
                              left=0.12, right=0.86 if bar else 0.98, top=0.86, bottom=0.1)
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
        right.text(0.995, 0.48, "attention weight (one scale per block)", rotation=90, ha="right", va="center",
                   transform=right.transSubfigure)
    right.supxlabel(f"attention of {query_label} to each patch", y=0.0, va="bottom")
    if title:
        fig.suptitle(title)
    return attach_data(fig, attention=maps, blocks=list(range(blocks)), heads=list(range(heads)),
                       query=query_label, scale=scale)
