"""Faithfulness of relevance maps: deletion and insertion curves (Petsiuk et al., "RISE", BMVC 2018),
a random-order baseline, and the model-randomisation sanity check (Adebayo et al., NeurIPS 2018).

Pure functions: tensors and arrays in, tensors and arrays out. The classifier is passed in as a
callable, so nothing here knows about timm or hooks.
"""

from __future__ import annotations

import copy
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

__all__ = [
    "auc",
    "cell_relevance",
    "perturbation_curve",
    "random_baseline",
    "randomise_top",
    "rank_correlation",
]

Predict = Callable[[torch.Tensor], torch.Tensor]


def cell_relevance(relevance: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Resample a relevance map of any size to ``grid`` cells by area averaging.

    Args:
        relevance: (h, w) map (a patch grid, a stage grid, or pixels).
        grid: (gh, gw) cells.

    Returns:
        (gh, gw) float64.
    """
    t = torch.as_tensor(np.asarray(relevance, dtype=np.float64))[None, None]
    return F.adaptive_avg_pool2d(t, grid)[0, 0].numpy()


def _cell_masks(order: np.ndarray, grid: tuple[int, int], size: tuple[int, int], counts: list[int]) -> torch.Tensor:
    """(len(counts), 1, H, W) float masks: 1 where one of the first ``counts[i]`` cells in ``order`` lies."""
    gh, gw = grid
    height, width = size
    ys = (np.arange(height) * gh) // height
    xs = (np.arange(width) * gw) // width
    cell_of_pixel = torch.as_tensor(ys[:, None] * gw + xs[None, :])
    rank = torch.empty(gh * gw, dtype=torch.long)
    rank[torch.as_tensor(order)] = torch.arange(gh * gw)
    pixel_rank = rank[cell_of_pixel]  # H, W
    return torch.stack([(pixel_rank < c).float() for c in counts])[:, None]


def perturbation_curve(
    predict: Predict,
    x: torch.Tensor,
    baseline: torch.Tensor,
    relevance: np.ndarray,
    target: int,
    mode: Literal["deletion", "insertion"],
    step: int = 1,
    batch_size: int = 32,
    order: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Target-class probability as cells are removed (deletion) or revealed (insertion).

    Cells are taken in decreasing relevance (ties by position). Deletion replaces the first k
    cells of ``x`` with ``baseline``; insertion puts the first k cells of ``x`` onto ``baseline``.

    Args:
        predict: (n, 3, H, W) → (n, classes) probabilities.
        x, baseline: (3, H, W) model inputs.
        relevance: (gh, gw) map over the cells.
        step: cells per step; the last step takes the rest.
        order: an explicit cell order (overrides ``relevance``), e.g. a random one.

    Returns:
        fractions: (steps + 1,) share of cells changed, from 0 to 1.
        probs: (steps + 1,) probability of ``target``.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if step < 1:
        raise ValueError(f"step must be ≥ 1, got {step}")
    grid = tuple(relevance.shape)
    cells = grid[0] * grid[1]
    if order is None:
        order = np.argsort(-relevance.reshape(-1), kind="stable")
    counts = list(range(0, cells, step)) + [cells]
    probs = []
    for start in range(0, len(counts), batch_size):
        chunk = counts[start : start + batch_size]
        masks = _cell_masks(order, grid, tuple(x.shape[-2:]), chunk).to(x.device)
        if mode == "deletion":
            batch = x[None] * (1 - masks) + baseline[None] * masks
        else:
            batch = baseline[None] * (1 - masks) + x[None] * masks
        probs.append(predict(batch)[:, target].detach().double().cpu())
    return np.array(counts, dtype=np.float64) / cells, torch.cat(probs).numpy()


def auc(fractions: np.ndarray, probs: np.ndarray) -> float:
    """Area under a curve by the trapezoid rule over ``fractions`` (0…1)."""
    return float(np.sum((fractions[1:] - fractions[:-1]) * (probs[1:] + probs[:-1]) / 2.0))


def random_baseline(predict: Predict, x: torch.Tensor, baseline: torch.Tensor, grid: tuple[int, int], target: int,
                    seeds: list[int], step: int = 1, batch_size: int = 32) -> dict[str, dict[str, float]]:
    """Deletion and insertion AUC of random cell orders: mean and standard deviation over ``seeds``."""
    out: dict[str, list[float]] = {"deletion": [], "insertion": []}
    dummy = np.zeros(grid)
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(grid[0] * grid[1])
        for mode in out:
            f, p = perturbation_curve(predict, x, baseline, dummy, target, mode, step, batch_size, order=order)
            out[mode].append(auc(f, p))
    return {mode: {"mean": float(np.mean(v)), "std": float(np.std(v))} for mode, v in out.items()}


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation between two maps of the same shape (0 if either is constant)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.shape} vs {b.shape}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def randomise_top(model: torch.nn.Module, blocks: int = 2, seed: int = 0) -> torch.nn.Module:
    """A copy of ``model`` with its classifier head and last ``blocks`` blocks re-initialised (cascading
    randomisation from the top, as in Adebayo et al.)."""
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    targets = [clone.get_classifier()]
    if hasattr(clone, "blocks"):  # ViT
        targets += list(clone.blocks)[-blocks:]
    elif hasattr(clone, "layers"):  # Swin: the last blocks, counted across stages from the end
        all_blocks = [b for stage in clone.layers for b in stage.blocks]
        targets += all_blocks[-blocks:]
    for module in targets:
        for sub in module.modules():
            if isinstance(sub, torch.nn.Linear):
                torch.nn.init.trunc_normal_(sub.weight, std=0.02)
                if sub.bias is not None:
                    torch.nn.init.normal_(sub.bias, std=0.02)
            elif isinstance(sub, torch.nn.LayerNorm):
                torch.nn.init.normal_(sub.weight, 1.0, 0.1)
                torch.nn.init.normal_(sub.bias, 0.0, 0.1)
            elif hasattr(sub, "relative_position_bias_table"):
                torch.nn.init.trunc_normal_(sub.relative_position_bias_table, std=0.02)
    return clone.eval()
