"""A seeded percentile bootstrap over images (numpy only: pages and claims use it without torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "bootstrap_interval"]


@dataclass(frozen=True)
class Interval:
    """Mean over images and its percentile-bootstrap interval.

    Attributes:
        mean, low, high: arrays of the per-image statistic's trailing shape.
        n_images: images averaged.
        n_boot, seed, confidence: the bootstrap settings that produced ``low`` and ``high``.
    """

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_images: int
    n_boot: int
    seed: int
    confidence: float


def bootstrap_interval(values: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                       confidence: float = 0.95) -> Interval:
    """Mean over the first axis (images) and a seeded percentile-bootstrap interval.

    Images are resampled with replacement ``n_boot`` times (one multinomial draw of counts
    per resample, from ``numpy.random.default_rng(seed)``); the interval is the
    ((1 − confidence)/2, (1 + confidence)/2) quantiles of the resampled means. The same
    ``seed`` gives the same interval. NaN in any image makes that cell NaN. With one image the
    interval collapses onto the mean.

    Args:
        values: (images, ...) per-image statistic (anything ``np.asarray`` takes, tensors included).

    Returns:
        :class:`Interval` with arrays shaped like ``values[0]``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or values.shape[0] == 0:
        raise ValueError("need at least one image along the first axis")
    if n_boot < 1 or not 0 < confidence < 1:
        raise ValueError(f"need n_boot ≥ 1 and 0 < confidence < 1, got {n_boot}, {confidence}")
    n = values.shape[0]
    flat = values.reshape(n, -1)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)  # n_boot, n
    with np.errstate(invalid="ignore"):
        means = counts @ flat / n  # n_boot, cells
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    shape = values.shape[1:]
    return Interval(mean=flat.mean(axis=0).reshape(shape), low=low.reshape(shape), high=high.reshape(shape),
                    n_images=n, n_boot=n_boot, seed=seed, confidence=confidence)


# --------------------------------------------------------------------------- faithfulness across images


def bootstrap_intervals(values: np.ndarray, level: float = 0.95, samples: int = 2000,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the mean over images, per column.

    Every column is resampled with the same image indices (a paired bootstrap: methods are compared
    on the same draws). With one image the interval is that image's value.

    Args:
        values: (images, columns).

    Returns:
        low, high: (columns,).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 1:
        raise ValueError(f"values must be (images ≥ 1, columns), got shape {values.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n = values.shape[0]
    index = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    means = values[index].mean(axis=1)  # samples, columns
    tail = (1 - level) / 2
    return np.quantile(means, tail, axis=0), np.quantile(means, 1 - tail, axis=0)


def rank_first_counts(scores: np.ndarray, higher_is_better: bool = True, eligible: np.ndarray | None = None) -> np.ndarray:
    """Per column, the number of rows (images) on which it has the best score; tied bests all count.

    Args:
        scores: (images, methods).
        eligible: optional (images, methods) bool; ineligible entries never rank first.

    Returns:
        (methods,) int.
    """
    scores = np.asarray(scores, dtype=np.float64)
    signed = scores if higher_is_better else -scores
    if eligible is not None:
        signed = np.where(np.asarray(eligible, dtype=bool), signed, -np.inf)
    best = signed.max(axis=1, keepdims=True)
    return ((signed == best) & np.isfinite(best)).sum(axis=0).astype(int)
