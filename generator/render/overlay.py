"""Heatmap overlays shared by the rollout, Swin and metric figures."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes

OVERLAY_CMAP = "inferno"  # perceptually uniform


def scaled(mask: np.ndarray) -> np.ndarray:
    """Scale a non-negative map to [0, 1] by its maximum (the figures state this scale)."""
    peak = float(np.max(mask)) if mask.size else 0.0
    return mask / peak if peak > 0 else np.zeros_like(mask)


def draw_overlay(ax: Axes, view: np.ndarray, mask: np.ndarray, title: str = "", alpha: float = 0.6):
    """Draw ``view`` (H, W, 3) with ``mask`` (h, w) upsampled smoothly on top; return the mappable.

    The mask is scaled to its maximum, so the colour scale runs 0…1 for every panel.
    """
    height, width = view.shape[:2]
    # Both layers share one frame, pixel edges at 0…width and 0…height (imshow's default puts
    # pixel centres on integers, i.e. edges at −0.5…width−0.5, which left a half-pixel strip of
    # bare heat map along the right and bottom edges).
    ax.imshow(view, extent=(0, width, height, 0), interpolation="nearest" if height < 64 else "antialiased")
    image = ax.imshow(scaled(mask), extent=(0, width, height, 0), cmap=OVERLAY_CMAP, alpha=alpha,
                      vmin=0.0, vmax=1.0, interpolation="bilinear")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, pad=3)
    return image
