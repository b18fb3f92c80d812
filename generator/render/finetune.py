"""Probe figures: training curves and the confusion matrix."""

from __future__ import annotations

import numpy as np

from .style import attach_data, label_colorbar, new_figure


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def probe_figure(history: list[dict], confusion: np.ndarray, classes: list[str], title: str):
    """Training loss and validation accuracy per epoch, and the test confusion matrix (row-normalised)."""
    fig = new_figure(8.2, 3.4, layout="constrained")
    grid = fig.add_gridspec(1, 3, width_ratios=[1.0, 1.0, 1.15])
    epochs = [h["epoch"] for h in history]
    ax = fig.add_subplot(grid[0, 0])
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", markersize=3)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_ylabel("training loss")
    ax = fig.add_subplot(grid[0, 1])
    ax.plot(epochs, [100 * h["val_accuracy"] for h in history], marker="o", markersize=3, color="#2a7d3f")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_ylabel("validation accuracy %")
    for a in fig.axes:
        a.spines[["top", "right"]].set_visible(False)
    ax = fig.add_subplot(grid[0, 2])
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(classes))
    if len(classes) <= 12:
        ax.set_xticks(ticks, classes, rotation=90)
        ax.set_yticks(ticks, classes)
    else:  # class numbers, as many as fit (the data file lists the names)
        from matplotlib.ticker import MaxNLocator

        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    label_colorbar(fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04), "fraction of the true class")
    fig.suptitle(title)
    return attach_data(fig, history=history, confusion=confusion, classes=list(classes))
