"""Faithfulness of relevance maps: deletion and insertion curves (Petsiuk et al., "RISE", BMVC 2018),
a random-order baseline, the model-randomisation sanity check (Adebayo et al., NeurIPS 2018), ROAD
(remove and debias; Rong et al., ICML 2022) through pytorch-grad-cam's own metric classes, and the
statistics the comparison across images needs (bootstrap intervals, rank-first counts) with the
one number format every table uses.

Pure functions: tensors and arrays in, tensors and arrays out. The classifier is passed in as a
callable, so nothing here knows about timm or hooks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

__all__ = [
    "Curves",
    "auc",
    "cell_order",
    "cell_relevance",
    "faithfulness_curves",
    "pixel_order_map",
    "road_scores",
    "perturbation_curve",
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


def cell_order(cells: np.ndarray) -> np.ndarray:
    """The order deletion and insertion take cells in: most relevant first, ties by position.

    The values are compared as float32, the precision the records publish, so the order can be
    rebuilt from the published cells. Cells that are equal but for float64 summation noise (a LIME
    map's cells covering the same superpixels, averaged in another order: 1e-17 apart) count as
    tied and keep their position order on every machine; compared in float64, the noise's sign, which
    moves with the map's last bits, would decide between them and could differ between devices.

    Args:
        cells: (gh, gw) or (gh·gw,) cell relevance.

    Returns:
        (gh·gw,) permutation of the cell indices.
    """
    return np.argsort(-np.asarray(cells, dtype=np.float32).reshape(-1), kind="stable")


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
        order = cell_order(relevance)
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
    randomisation from the top, as in Adebayo et al.).

    The new weights are drawn on the CPU under a forked RNG seeded with ``seed``, then moved to the
    model's device: the same seed gives the same copy on every device (torch's CUDA generator draws
    another stream), and the caller's RNG state is left as it was.
    """
    device = next(model.parameters()).device
    clone = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _reinitialise_top(clone, blocks)
    return clone.to(device).eval()


def _reinitialise_top(clone: torch.nn.Module, blocks: int) -> None:
    """Re-initialise what the family adapter names: the classifier head and the last ``blocks`` blocks."""
    from ..families import family_of

    for module in family_of(clone).randomise_targets(clone, blocks):
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


# --------------------------------------------------------------------------- every curve of one image at once


@dataclass(frozen=True)
class Curves:
    """Deletion and insertion curves of several cell orders on one image.

    Attributes:
        fractions: (steps + 1,) share of cells changed, 0 … 1.
        deletion, insertion: (orders, steps + 1) target probability.
        forwards: images passed through the model to make them (the three shared end points once,
            plus every interior point of every order and mode).
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    forwards: int


def faithfulness_curves(predict: Predict, x: torch.Tensor, deletion_base: torch.Tensor, insertion_base: torch.Tensor,
                        orders: Sequence[np.ndarray], grid: tuple[int, int], target: int, step: int = 1,
                        batch_size: int = 32) -> Curves:
    """Deletion and insertion curves of every order in one stream of full batches.

    The same numbers as :func:`perturbation_curve` called per order and mode, but the points every
    order shares are computed once per image: the untouched input (deletion at 0, insertion at 1),
    the fully removed input (the deletion baseline) and the fully revealed start (the insertion
    baseline). Interior points of all orders and both modes are batched together.

    Args:
        predict: (n, 3, H, W) → (n, classes) probabilities.
        x, deletion_base, insertion_base: (3, H, W).
        orders: each (gh·gw,) a permutation of the cells, most relevant first.
        grid: (gh, gw).
        step: cells per step; the last step takes the rest.

    Returns:
        :class:`Curves`.
    """
    if step < 1:
        raise ValueError(f"step must be ≥ 1, got {step}")
    gh, gw = grid
    cells = gh * gw
    counts = list(range(0, cells, step)) + [cells]
    interior = counts[1:-1]
    height, width = x.shape[-2:]
    ys = torch.as_tensor((np.arange(height) * gh) // height)
    xs = torch.as_tensor((np.arange(width) * gw) // width)
    cell_of_pixel = ys[:, None] * gw + xs[None, :]
    ranks = []
    for order in orders:
        order = np.asarray(order)
        if sorted(order.tolist()) != list(range(cells)):
            raise ValueError(f"an order must be a permutation of the {cells} cells")
        rank = torch.empty(cells, dtype=torch.long)
        rank[torch.as_tensor(order)] = torch.arange(cells)
        ranks.append(rank[cell_of_pixel])
    pixel_ranks = torch.stack(ranks).to(x.device) if ranks else torch.empty(0, height, width, dtype=torch.long)
    with torch.no_grad():
        ends = predict(torch.stack([x, deletion_base, insertion_base]))[:, target].detach().double().cpu().numpy()
    n = len(ranks)
    deletion = np.empty((n, len(counts)))
    insertion = np.empty((n, len(counts)))
    deletion[:, 0], deletion[:, -1] = ends[0], ends[1]
    insertion[:, 0], insertion[:, -1] = ends[2], ends[0]
    # jobs: (order, mode (0 deletion, 1 insertion), interior index)
    jobs = torch.tensor([(o, mode, j) for o in range(n) for mode in (0, 1) for j in range(len(interior))],
                        dtype=torch.long).view(-1, 3)
    count_of = torch.tensor(interior, dtype=torch.long, device=x.device)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size].to(x.device)
        masks = (pixel_ranks[chunk[:, 0]] < count_of[chunk[:, 2]][:, None, None])[:, None]  # B, 1, H, W
        deleting = (chunk[:, 1] == 0).view(-1, 1, 1, 1)
        begin = torch.where(deleting, x[None], insertion_base[None])
        replace = torch.where(deleting, deletion_base[None], x[None])
        batch = torch.where(masks, replace, begin)
        with torch.no_grad():
            probs = predict(batch)[:, target].detach().double().cpu().numpy()
        for (o, mode, j), p in zip(chunk.cpu().tolist(), probs):
            (deletion if mode == 0 else insertion)[o, j + 1] = p
    return Curves(np.array(counts, dtype=np.float64) / cells, deletion, insertion, 3 + len(jobs))


# --------------------------------------------------------------------------- ROAD


def pixel_order_map(relevance: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map's pixel order as a (H, W) float32 map in [0, 1] (1: most relevant), for ROAD's thresholds.

    ``relevance`` (h, w) is taken to ``size`` by nearest cell (a grid map's cells stay whole), then
    its values are replaced by their rank, ties by position (as deletion orders cells). ROAD only
    thresholds the map at percentiles, so this keeps its order and stops a tie (the zeros of a
    clipped CAM) from moving a whole tied region across a threshold at once.
    """
    relevance = np.asarray(relevance, dtype=np.float64)
    height, width = size
    rows = (np.arange(height) * relevance.shape[0] // height).clip(0, relevance.shape[0] - 1)
    cols = (np.arange(width) * relevance.shape[1] // width).clip(0, relevance.shape[1] - 1)
    pixels = relevance[np.ix_(rows, cols)].reshape(-1)
    order = np.argsort(-pixels, kind="stable")
    rank = np.empty(pixels.size, dtype=np.float64)
    rank[order] = np.arange(pixels.size)
    return (1.0 - rank / max(pixels.size - 1, 1)).reshape(height, width).astype(np.float32)


def road_scores(predict: Predict, x: torch.Tensor, maps: Sequence[np.ndarray], target: int,
                percentiles: Sequence[int], seed: int = 0, batch_size: int = 32,
                base_prob: float | None = None) -> dict[str, np.ndarray]:
    """ROAD (remove and debias) with pytorch-grad-cam's imputer and thresholds, batched.

    For each map and percentile p, ``RemoveMostRelevantFirst(p, NoisyLinearImputer())`` (what
    ``ROADMostRelevantFirst(p)`` applies) replaces the pixels at or above the map's p-th percentile
    with a noisy linear interpolation of their neighbours, and ``RemoveLeastRelevantFirst`` does the
    same for the reversed map. The imputer's noise comes from torch's RNG: every imputation runs in a
    forked RNG seeded with ``seed`` (the same noise for every method: a paired comparison). Scores are
    the library's: the target probability after imputation minus before
    (``ClassifierOutputSoftmaxTarget``), averaged over percentiles, and ``ROADCombined``'s
    (LeRF − MoRF) / 2. The untouched input's probability is computed once (or passed in).

    Args:
        predict: (n, 3, H, W) → (n, classes) probabilities.
        x: (3, H, W).
        maps: (H, W) float32 maps as the library takes them (see :func:`pixel_order_map`).
        percentiles: ROAD's thresholds (0 < p < 100).

    Returns:
        ``morf``, ``lerf``: (maps, percentiles) probability change; ``combined``: (maps,); ``forwards``: int.
    """
    from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    source = x.detach().cpu()
    imputed = []
    for relevance in maps:
        mask = torch.from_numpy(np.asarray(relevance, dtype=np.float32))
        for kind in (RemoveMostRelevantFirst, RemoveLeastRelevantFirst):
            for p in percentiles:
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    imputed.append(kind(p, NoisyLinearImputer())(source, mask))
    forwards = len(imputed)
    if base_prob is None:
        with torch.no_grad():
            base_prob = float(predict(x[None])[0, target])
        forwards += 1
    after = []
    for start in range(0, len(imputed), batch_size):
        with torch.no_grad():
            batch = torch.stack(imputed[start:start + batch_size]).to(x.device)
            after.append(predict(batch)[:, target].detach().float().cpu().numpy())
    change = (np.concatenate(after) if after else np.empty(0, np.float32)).astype(np.float64) - np.float32(base_prob)
    change = change.reshape(len(maps), 2, len(percentiles))
    morf, lerf = change[:, 0], change[:, 1]
    return {"morf": morf, "lerf": lerf, "combined": (lerf.mean(axis=1) - morf.mean(axis=1)) / 2,
            "forwards": forwards}
