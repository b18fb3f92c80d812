"""Attention-statistics figures: mean distance and entropy by block, positional-score map,
consecutive-block similarity, and Swin offset kernels per head.

Every function draws numbers it is given (from :mod:`generator.attention.stats`) and returns a
pyplot-free :class:`~matplotlib.figure.Figure` at most ``MAX_WIDTH`` inches wide, with every
text element at least ``MIN_FONT`` points, so text stays ≥ 9 px when shown ~640 px wide.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from .style import attach_data, new_figure

__all__ = [
    "MAX_WIDTH",
    "MIN_FONT",
    "block_similarity_figure",
    "entropy_figure",
    "mean_distance_figure",
    "positional_map_figure",
    "swin_kernels_figure",
]

MAX_WIDTH = 6.4  # inches: ~640 px at 100 dpi
MIN_FONT = 9  # points
TITLE_FONT = 10
KERNEL_COLUMNS = 4  # heads per row in the kernel grid


def _fonts(ax) -> None:
    """Axis labels, tick labels and title at readable sizes."""
    ax.tick_params(labelsize=MIN_FONT)
    ax.xaxis.label.set_fontsize(MIN_FONT)
    ax.yaxis.label.set_fontsize(MIN_FONT)
    ax.title.set_fontsize(MIN_FONT)


def _colorbar(fig: Figure, image, ax, label: str, **kwargs):
    bar = fig.colorbar(image, ax=ax, **kwargs)
    bar.set_label(label, fontsize=MIN_FONT)
    bar.ax.tick_params(labelsize=MIN_FONT)
    return bar


def _head_colours(heads: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if heads <= 10 else "turbo"]
    return [cmap(h % 10) if heads <= 10 else cmap(h / max(heads - 1, 1)) for h in range(heads)]


def _head_legend(ax, heads: int) -> None:
    if heads <= 12:
        ax.legend(fontsize=MIN_FONT, frameon=False, ncols=min(heads, 6), loc="upper center",
                  bbox_to_anchor=(0.5, -0.22), handletextpad=0.2, columnspacing=0.8)


def _per_head_points(ax, values: np.ndarray, low: np.ndarray | None, high: np.ndarray | None) -> None:
    blocks, heads = values.shape
    offsets = (np.arange(heads) - (heads - 1) / 2) * min(0.08, 0.6 / max(heads, 1))
    for h, colour in enumerate(_head_colours(heads)):
        x = np.arange(blocks) + offsets[h]
        if low is not None and high is not None:
            ax.errorbar(x, values[:, h], yerr=[values[:, h] - low[:, h], high[:, h] - values[:, h]], fmt="o",
                        ms=4, color=colour, elinewidth=0.8, label=f"head {h}")
        else:
            ax.plot(x, values[:, h], "o", ms=4, color=colour, label=f"head {h}")
    ax.plot(np.arange(blocks), values.mean(axis=1), "-", color="0.3", lw=1.2, label="mean")
    ax.set_xticks(np.arange(blocks))
    ax.set_xlabel("block")


def mean_distance_figure(distance: np.ndarray, *, low: np.ndarray | None = None, high: np.ndarray | None = None,
                         pixels_per_patch: float | None = None, uniform_distance: float | None = None,
                         title: str = "") -> Figure:
    """Mean attention distance against block, one point per head (the ViT paper's plot).

    Args:
        distance: (blocks, heads) mean distance in patches (images averaged).
        low, high: optional (blocks, heads) interval bounds, drawn as error bars.
        pixels_per_patch: when given, a right-hand axis in input pixels.
        uniform_distance: when given, a dashed line at the distance of uniform attention.
        title: figure title.
    """
    distance = np.asarray(distance, dtype=float)
    fig = new_figure(MAX_WIDTH, 3.4)
    ax = fig.add_axes((0.12, 0.3, 0.74 if pixels_per_patch else 0.84, 0.6))
    _per_head_points(ax, distance, low, high)
    if uniform_distance is not None:
        ax.axhline(uniform_distance, ls="--", color="0.5", lw=1, label="uniform attention")
    ax.set_ylabel("mean attention distance (patches)")
    ax.set_ylim(bottom=0)
    if pixels_per_patch:
        right = ax.secondary_yaxis("right", functions=(lambda v: v * pixels_per_patch, lambda v: v / pixels_per_patch))
        right.set_ylabel("(pixels)", fontsize=MIN_FONT)
        right.tick_params(labelsize=MIN_FONT)
    _head_legend(ax, distance.shape[1])
    _fonts(ax)
    if title:
        fig.suptitle(title, fontsize=TITLE_FONT)
    return attach_data(fig, mean_distance=distance, low=low, high=high)


def entropy_figure(entropy: np.ndarray, *, low: np.ndarray | None = None, high: np.ndarray | None = None,
                   title: str = "") -> Figure:
    """Normalised attention entropy against block, one point per head.

    Args:
        entropy: (blocks, heads) in [0, 1] (images averaged); low, high: optional intervals.
    """
    entropy = np.asarray(entropy, dtype=float)
    fig = new_figure(MAX_WIDTH, 3.4)
    ax = fig.add_axes((0.12, 0.3, 0.84, 0.6))
    _per_head_points(ax, entropy, low, high)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("normalised entropy (1 = uniform)")
    _head_legend(ax, entropy.shape[1])
    _fonts(ax)
    if title:
        fig.suptitle(title, fontsize=TITLE_FONT)
    return attach_data(fig, entropy=entropy, low=low, high=high)


def positional_map_figure(positional: np.ndarray, *, title: str = "") -> Figure:
    """Heatmap of heads' positional score, blocks × heads.

    Args:
        positional: (blocks, heads) mean cross-image Pearson correlation (images averaged).
    """
    positional = np.asarray(positional, dtype=float)
    blocks, heads = positional.shape
    cell = min(0.45, 4.8 / max(heads, 1))
    fig = new_figure(min(MAX_WIDTH, cell * heads + 2.2), max(2.4, cell * blocks + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(positional, vmin=min(0.0, float(np.nanmin(positional))), vmax=1.0, cmap="viridis",
                      aspect="equal", interpolation="nearest")
    if heads <= 8 and blocks <= 16:
        for b in range(blocks):
            for h in range(heads):
                v = positional[b, h]
                ax.text(h, b, f"{v:.2f}", ha="center", va="center", fontsize=MIN_FONT,
                        color="black" if v > 0.6 else "white")
    ax.set_xticks(np.arange(heads))
    ax.set_yticks(np.arange(blocks))
    ax.set_xlabel("head")
    ax.set_ylabel("block")
    _colorbar(fig, image, ax, "positional score\n(cross-image correlation)", fraction=0.08, pad=0.04)
    _fonts(ax)
    if title:
        fig.suptitle(title, fontsize=TITLE_FONT)
    fig.subplots_adjust(left=0.15, right=0.85, bottom=0.18, top=0.88)
    return attach_data(fig, positional=positional)


def block_similarity_figure(mean: np.ndarray, *, low: np.ndarray | None = None, high: np.ndarray | None = None,
                            title: str = "") -> Figure:
    """Similarity of consecutive blocks' head-averaged attention, with its interval.

    Args:
        mean: (blocks − 1,) Pearson similarity of block b with b + 1; low, high: interval bounds.
    """
    mean = np.asarray(mean, dtype=float)
    x = np.arange(len(mean))
    fig = new_figure(MAX_WIDTH, 3.0)
    ax = fig.add_axes((0.12, 0.2, 0.84, 0.68))
    if low is not None and high is not None:
        ax.fill_between(x, low, high, color="C0", alpha=0.25, lw=0, label="95 % interval")
    ax.plot(x, mean, "o-", color="C0", label="mean over images")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xticks(x, [f"{b}→{b + 1}" for b in x])
    ax.set_ylim(-1.02, 1.02)
    ax.set_xlabel("consecutive blocks")
    ax.set_ylabel("similarity (Pearson r)")
    ax.legend(fontsize=MIN_FONT, frameon=False, loc="lower right")
    _fonts(ax)
    if title:
        fig.suptitle(title, fontsize=TITLE_FONT)
    return attach_data(fig, similarity=mean, low=low, high=high)


def swin_kernels_figure(kernels: np.ndarray, classes: Sequence[Sequence[str]], *, stage: int,
                        first_block: int = 0, title: str = "") -> Figure:
    """Each head's mean attention by offset, for the blocks of one Swin stage.

    Each panel shows a head's kernel divided by its mean weight (1 = uniform); the centre is
    offset (0, 0), up is negative dy. Panels are titled with the head's kernel class.

    Args:
        kernels: (blocks, heads, 2wh − 1, 2ww − 1) image-averaged offset kernels of one stage.
        classes: blocks × heads class names (``classify_kernel``).
        stage: stage index, for the labels; first_block: index of ``kernels[0]`` in the stage.
    """
    kernels = np.asarray(kernels, dtype=float)
    blocks, heads = kernels.shape[:2]
    relative = kernels / kernels.mean(axis=(-2, -1), keepdims=True)
    cols = min(heads, KERNEL_COLUMNS)
    rows_per_block = -(-heads // cols)
    rows = blocks * rows_per_block
    panel = min(1.3, (MAX_WIDTH - 1.2) / cols)
    fig = new_figure(min(MAX_WIDTH, panel * cols + 1.2), panel * rows * 1.25 + 0.7)
    grid = fig.add_gridspec(rows, cols, left=0.12, right=0.82, bottom=0.04, top=0.92 - 0.2 / max(rows, 1),
                            hspace=0.45, wspace=0.15)
    vmin, vmax = float(np.nanmin(relative)), float(np.nanmax(relative))
    axes = []
    image = None
    cy, cx = kernels.shape[2] // 2, kernels.shape[3] // 2
    for b in range(blocks):
        for h in range(heads):
            r, c = b * rows_per_block + h // cols, h % cols
            ax = fig.add_subplot(grid[r, c])
            image = ax.imshow(relative[b, h], vmin=vmin, vmax=vmax, cmap="magma", interpolation="nearest")
            ax.plot([cx], [cy], "+", color="cyan", ms=5, mew=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"h{h}: {classes[b][h]}", fontsize=MIN_FONT, pad=2)
            if c == 0 and h < cols:
                ax.set_ylabel(f"block {first_block + b}", fontsize=MIN_FONT)
            axes.append(ax)
    if image is not None:
        _colorbar(fig, image, axes, "weight ÷ uniform weight", fraction=0.05, pad=0.03)
    fig.supxlabel("offset key − query: dx to the right, dy down; + marks (0, 0)", fontsize=MIN_FONT, y=0.0)
    fig.suptitle(title or f"stage {stage}: mean attention by offset inside windows", fontsize=TITLE_FONT)
    return attach_data(fig, kernels=kernels, classes=[list(c) for c in classes], stage=stage)
