"""Faithfulness figure: deletion and insertion curves of every method, with the random baseline."""

from __future__ import annotations

import numpy as np

from .style import new_figure


def curves_figure(fractions: np.ndarray, curves: np.ndarray, methods: list[str], random: dict, title: str):
    """Args:
    fractions: (steps + 1,) share of cells changed.
    curves: (methods, 2, steps + 1) target probability: [deletion, insertion].
    random: {"deletion": {"mean", "std"}, "insertion": {...}} AUCs of random orders.
    """
    fig = new_figure(8.0, 3.0)
    axes = fig.subplots(1, 2, sharey=True)
    for k, (ax, label) in enumerate(zip(axes, ("deletion (lower is better)", "insertion (higher is better)"))):
        for m, name in enumerate(methods):
            ax.plot(fractions, curves[m, k], label=name, linewidth=1.2)
        stats = random["deletion" if k == 0 else "insertion"]
        ax.axhline(stats["mean"], color="grey", linestyle="--", linewidth=0.9,
                   label=f"random: AUC {stats['mean']:.3f} ± {stats['std']:.3f}")
        ax.set_title(label)
        ax.set_xlabel("share of cells " + ("removed" if k == 0 else "revealed"))
        ax.set_xlim(0, 1)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("target probability")
    axes[1].legend(fontsize=6, frameon=False, loc="lower right")
    fig.suptitle(title)
    return fig
