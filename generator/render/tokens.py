"""Registers and artifact tokens: token-norm maps of the last blocks with the outliers outlined, and
the share of attention on outliers and registers by block. Draws the numbers it is given."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .style import attach_data, label_colorbar, new_figure

__all__ = ["norm_maps_figure", "shares_figure"]

MAX_WIDTH = 6.4  # inches: the content column


def norm_maps_figure(view: np.ndarray, ratios: np.ndarray, outliers: np.ndarray, *, first_block: int, factor: float,
                     title: str = "") -> Figure:
    """The input, then one map per block of each patch token's norm divided by the block's median patch norm.

    Args:
        view: (H, W, 3) uint8 input as the model saw it.
        ratios: (blocks, h, w) norm ÷ median patch norm of the drawn blocks.
        outliers: (blocks, h, w) bool, outlined in each map.
        first_block: index of ``ratios[0]`` among the model's blocks.
        factor: the outlier rule's factor, marked on the colour bar.
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    n, h, w = ratios.shape
    panel = min(1.3, (MAX_WIDTH - 1.2) / (n + 1))
    height = panel + 0.6
    fig = new_figure(panel * (n + 1) + 1.2, height)
    grid = fig.add_gridspec(1, n + 2, width_ratios=[1.0] * (n + 1) + [0.08], wspace=0.12,
                            left=0.02, right=0.82, bottom=0.1 / height, top=1 - 0.5 / height)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(view, interpolation="nearest")
    ax.set_title("input", pad=3)
    ax.set_axis_off()
    vmax = max(1.25 * factor, float(ratios.max()))
    image = None
    for i in range(n):
        ax = fig.add_subplot(grid[0, i + 1])
        image = ax.imshow(ratios[i], vmin=0.0, vmax=vmax, cmap="magma", interpolation="nearest")
        for r, c in zip(*np.nonzero(outliers[i])):
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="cyan", lw=1.2))
        ax.set_title(f"block {first_block + i}", pad=3)
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(image, cax=fig.add_subplot(grid[0, n + 1]))
    bar.ax.axhline(factor, color="cyan", lw=1.2)
    label_colorbar(bar, f"norm ÷ median\n(outlier > {factor:g})")
    if title:
        fig.suptitle(title)
    return attach_data(fig, norm_over_median=ratios, outliers=outliers.astype(np.uint8), first_block=first_block,
                       factor=factor)


def shares_figure(lines: Mapping[str, Mapping[str, Sequence[float | None]]], *, uniform: float | None = None,
                  title: str = "") -> Figure:
    """Share of attention (%) by block: a colour per target (outliers, registers), a line style per query;
    None (not measured) leaves a gap.

    Args:
        lines: target → query → per-block share in [0, 1].
        uniform: the registers' share of the tokens, drawn as a dotted reference line.
    """
    values = {(target, query): np.array([np.nan if v is None else 100.0 * v for v in series], dtype=np.float64)
              for target, by_query in lines.items() for query, series in by_query.items()}
    colours = {target: f"C{i}" for i, target in enumerate(lines)}
    styles = [("o", "-"), ("s", "--")]
    queries = list(dict.fromkeys(query for _, query in values))
    fig = new_figure(MAX_WIDTH, 3.2)
    ax = fig.add_axes((0.12, 0.36, 0.84, 0.54))
    for (target, query), v in values.items():
        marker, style = styles[queries.index(query) % len(styles)]
        ax.plot(np.arange(len(v)), v, marker=marker, ls=style, color=colours[target], ms=4,
                label=f"{target}, from {query}")
    if uniform is not None:
        ax.axhline(100.0 * uniform, ls=":", color="0.4", lw=1, label="registers' share of the tokens")
    ax.set_xticks(np.arange(max((len(v) for v in values.values()), default=0)))
    ax.set_xlabel("block")
    ax.set_ylabel("share of attention (%)")
    peak = max((float(np.nanmax(v)) for v in values.values() if np.isfinite(v).any()), default=0.0)
    ax.set_ylim(0, max(1.0, 1.1 * peak))  # at least 0–1 %: all-zero lines stay on a readable scale
    ax.legend(frameon=False, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    if title:
        fig.suptitle(title)
    return attach_data(fig, **{f"{target}, from {query}": v / 100.0 for (target, query), v in values.items()},
                       registers_share_of_tokens=uniform)
