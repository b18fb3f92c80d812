"""LIME figure (the study's Figure 5): the image, then the regions behind the top classes."""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from skimage.segmentation import find_boundaries

from .style import attach_data, label_colorbar, new_figure

SUPPORT = np.array([0.1, 0.8, 0.2])
OPPOSE = np.array([0.9, 0.1, 0.1])
#: Characters per title line: titles wrap instead of running into the next panel.
TITLE_WIDTH = 18


def tinted(view: np.ndarray, mask: np.ndarray, colour: np.ndarray, strength: float = 0.45) -> np.ndarray:
    """The image with ``mask`` tinted and outlined in ``colour``. view (H, W, 3) uint8 → float RGB."""
    out = view.astype(np.float64) / 255.0
    out[mask] = (1 - strength) * out[mask] + strength * colour
    out[find_boundaries(mask, mode="inner")] = colour
    return out


def wrap_title(text: str, width: int = TITLE_WIDTH) -> str:
    """A panel title broken into lines of at most ``width`` characters (at most three lines)."""
    lines = textwrap.wrap(text, width=width, break_long_words=True, break_on_hyphens=False) or [""]
    if len(lines) > 3:
        lines = lines[:2] + [textwrap.shorten(" ".join(lines[2:]), width=width, placeholder="…")]
    return "\n".join(lines)


def lime_figure(view, panels: list[dict], title: str, heatmaps: list[dict] | None = None,
                segments: np.ndarray | None = None):
    """Args:
    view: (H, W, 3) uint8 as the model saw it.
    panels: [{"mask": (H, W) bool, "title": str, "support": bool, "empty": str (optional)}]. A panel
        whose mask is empty says so in its middle (``empty``, or "no region found").
    heatmaps: [{"weights": (H, W) float, "title": str}] painted with a diverging colour map.
    segments: (H, W) int superpixel labels; when given, the figure's data file lists each
        superpixel's weight and the superpixels of each panel instead of pixel maps.
    """
    heatmaps = heatmaps or []
    count = 1 + len(panels) + len(heatmaps)
    fig = new_figure(2.0 * count + 0.5 * len(heatmaps) + 0.3, 2.9, layout="constrained")
    widths = [1.0] * (1 + len(panels)) + [1.25] * len(heatmaps)
    axes = fig.subplots(1, count, squeeze=False, width_ratios=widths)[0]
    interp = "nearest" if view.shape[0] < 64 else "antialiased"
    axes[0].imshow(view, interpolation=interp)
    axes[0].set_title("input", pad=3)
    for ax, panel in zip(axes[1:], panels):
        ax.imshow(tinted(view, panel["mask"], SUPPORT if panel["support"] else OPPOSE), interpolation=interp)
        ax.set_title(wrap_title(panel["title"]), pad=3)
        if not panel["mask"].any():
            ax.text(0.5, 0.5, wrap_title(panel.get("empty") or "no region found", 14), transform=ax.transAxes,
                    ha="center", va="center", bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85,
                                                    "edgecolor": "0.5"})
    for ax, heat in zip(axes[1 + len(panels):], heatmaps):
        limit = float(np.abs(heat["weights"]).max()) or 1.0
        image = ax.imshow(heat["weights"], cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -limit, limit), interpolation="nearest")
        ax.set_title(wrap_title(heat["title"]), pad=3)
        bar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03, ticks=[-limit, 0.0, limit])
        label_colorbar(bar, "LIME weight")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    data: dict = {"panels": [{"title": p["title"], "supports": bool(p["support"])} for p in panels],
                  "heatmaps": [{"title": h["title"]} for h in heatmaps]}
    if segments is not None:
        ids = np.unique(segments)
        data["superpixels"] = ids
        for entry, panel in zip(data["panels"], panels):
            entry["superpixels"] = np.unique(segments[panel["mask"]])
        for entry, heat in zip(data["heatmaps"], heatmaps):
            entry["weight_per_superpixel"] = np.array([heat["weights"][segments == i].mean() for i in ids])
    else:
        for entry, panel in zip(data["panels"], panels):
            entry["mask"] = panel["mask"].astype(np.uint8)
        for entry, heat in zip(data["heatmaps"], heatmaps):
            entry["weights"] = heat["weights"]
    return attach_data(fig, **data)
