"""Faithfulness figure: deletion and insertion curves of every method, with the random baseline."""

from __future__ import annotations

import numpy as np

from .style import attach_data, new_figure
from .text import fmt_number


def curves_figure(fractions: np.ndarray, curves: np.ndarray, methods: list[str], random: dict, title: str):
    """Args:
    fractions: (steps + 1,) share of cells changed.
    curves: (methods, 2, steps + 1) target probability: [deletion, insertion].
    random: {"deletion": {"mean", "std"}, "insertion": {...}} AUCs of random orders.
    """
    fig = new_figure(8.0, 3.2, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for k, (ax, label) in enumerate(zip(axes, ("deletion (lower is better)", "insertion (higher is better)"))):
        for m, name in enumerate(methods):
            ax.plot(fractions, curves[m, k], label=name, linewidth=1.2)
        stats = random["deletion" if k == 0 else "insertion"]
        ax.axhline(stats["mean"], color="grey", linestyle="--", linewidth=0.9,
                   label=f"random ({'deletion' if k == 0 else 'insertion'}): AUC "
                         f"{fmt_number(stats['mean'])} ± {fmt_number(stats['std'])}")
        ax.set_title(label)
        ax.set_xlabel("share of cells " + ("removed" if k == 0 else "revealed"))
        ax.set_xlim(0, 1)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("target probability")
    fig.legend(*_legend_entries(axes), frameon=False, loc="outside right center")
    fig.suptitle(title)
    return attach_data(fig, share_changed=fractions, methods=list(methods),
                       deletion={name: curves[m, 0] for m, name in enumerate(methods)},
                       insertion={name: curves[m, 1] for m, name in enumerate(methods)}, random_auc=random)


def _legend_entries(axes):
    """The methods once (both panels draw them), then each panel's random line."""
    handles, labels = axes[0].get_legend_handles_labels()
    more_handles, more_labels = axes[1].get_legend_handles_labels()
    return handles + more_handles[-1:], labels + more_labels[-1:]
