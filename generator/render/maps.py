"""The grid of relevance maps: one overlay per method, on one or on per-map colour scales."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .overlay import OVERLAY_CMAP
from .style import attach_data, new_figure


def _upsampled(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``mask`` (h, w) block-resampled to ``shape`` (H, W) by nearest cell (no smoothing of its values)."""
    rows = (np.arange(shape[0]) * mask.shape[0] // shape[0]).clip(0, mask.shape[0] - 1)
    cols = (np.arange(shape[1]) * mask.shape[1] // shape[1]).clip(0, mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]


def maps_figure(view: np.ndarray, maps: list[np.ndarray], titles: list[str], scale: str, title: str) -> Figure:
    """Args: view (H, W, 3) uint8; maps, each (h, w) relevance; scale "map" or "shared".

    Negative relevance (e.g. LIME weights against the class) is drawn as zero on these overlays;
    the numbers behind the figure keep the sign.
    """
    count = len(maps) + 1
    cols = min(count, 4)
    rows = int(np.ceil(count / cols))
    fig = new_figure(1.6 * cols + 0.5, 1.75 * rows + 0.45)
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1.0] * cols + [0.07], wspace=0.1, hspace=0.3)
    height, width = view.shape[:2]
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(view, interpolation="nearest" if height < 64 else "antialiased")
    ax.set_title("input", pad=3)
    ax.set_axis_off()
    if scale == "shared":
        prepared = [np.clip(_upsampled(m, (height, width)), 0, None) for m in maps]
        prepared = [m / m.sum() if m.sum() > 0 else m for m in prepared]
        vmax = max((float(m.max()) for m in prepared), default=1.0) or 1.0
        label = "share of the map's relevance per pixel"
    else:
        prepared = []
        for m in maps:
            peak = float(np.abs(m).max()) if m.size else 0.0
            prepared.append(np.clip(_upsampled(m, (height, width)), 0, None) / peak if peak > 0 else
                            np.zeros((height, width)))
        vmax, label = 1.0, "relevance / its largest magnitude"
    mappable = None
    for i, (m, name) in enumerate(zip(prepared, titles), start=1):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.imshow(view, interpolation="nearest" if height < 64 else "antialiased")
        mappable = ax.imshow(m, cmap=OVERLAY_CMAP, alpha=0.6, vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_title(name, pad=3)
        ax.set_axis_off()
    if mappable is not None:
        fig.colorbar(mappable, cax=fig.add_subplot(grid[:, cols]), label=label)
    fig.suptitle(title)
    return attach_data(fig, maps=[np.asarray(m) for m in maps], methods=list(titles), scale=scale)
