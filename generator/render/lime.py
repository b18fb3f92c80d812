"""LIME figure (the study's Figure 5): the image, then the regions behind the top classes."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from skimage.segmentation import find_boundaries

from .style import new_figure

SUPPORT = np.array([0.1, 0.8, 0.2])
OPPOSE = np.array([0.9, 0.1, 0.1])


def tinted(view: np.ndarray, mask: np.ndarray, colour: np.ndarray, strength: float = 0.45) -> np.ndarray:
    """The image with ``mask`` tinted and outlined in ``colour``. view (H, W, 3) uint8 → float RGB."""
    out = view.astype(np.float64) / 255.0
    out[mask] = (1 - strength) * out[mask] + strength * colour
    out[find_boundaries(mask, mode="inner")] = colour
    return out


def lime_figure(view, panels: list[dict], title: str, heatmaps: list[dict] | None = None):
    """Args:
    view: (H, W, 3) uint8 as the model saw it.
    panels: [{"mask": (H, W) bool, "title": str, "support": bool}].
    heatmaps: [{"weights": (H, W) float, "title": str}] painted with a diverging colour map.
    """
    heatmaps = heatmaps or []
    count = 1 + len(panels) + len(heatmaps)
    fig = new_figure(2.0 * count + 0.3, 2.5)
    axes = fig.subplots(1, count, squeeze=False)[0]
    interp = "nearest" if view.shape[0] < 64 else "antialiased"
    axes[0].imshow(view, interpolation=interp)
    axes[0].set_title("input", pad=3)
    for ax, panel in zip(axes[1:], panels):
        ax.imshow(tinted(view, panel["mask"], SUPPORT if panel["support"] else OPPOSE), interpolation=interp)
        ax.set_title(panel["title"], pad=3)
    for ax, heat in zip(axes[1 + len(panels):], heatmaps):
        limit = float(np.abs(heat["weights"]).max()) or 1.0
        image = ax.imshow(heat["weights"], cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -limit, limit), interpolation="nearest")
        ax.set_title(heat["title"], pad=3)
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=6)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    return fig
