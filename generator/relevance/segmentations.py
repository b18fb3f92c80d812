"""lime's segmentation algorithms: their default parameters and the allowed range of each (no torch)."""

from __future__ import annotations

import math

#: lime's segmentation algorithms with lime's own default parameters.
LIME_SEGMENTATIONS: dict[str, dict] = {
    "quickshift": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    "slic": {"n_segments": 50, "compactness": 10.0, "sigma": 1.0},
    "felzenszwalb": {"scale": 100.0, "sigma": 0.5, "min_size": 50},
}

#: Allowed range of each parameter: (low, high, low included).
SEGMENTATION_LIMITS: dict[str, tuple[float, float, bool]] = {
    "kernel_size": (0.0, math.inf, False), "max_dist": (0.0, math.inf, False), "ratio": (0.0, 1.0, True),
    "n_segments": (1.0, math.inf, True), "compactness": (0.0, math.inf, False), "sigma": (0.0, math.inf, True),
    "scale": (0.0, math.inf, False), "min_size": (0.0, math.inf, True),
}


def segmentation_problem(segmentation: str, name: str, value: float) -> str | None:
    """Why ``name = value`` is not a valid parameter of ``segmentation``, or None."""
    from ..config.settings import suggest

    if name not in LIME_SEGMENTATIONS[segmentation]:
        return f"not a {segmentation} parameter{suggest(name, LIME_SEGMENTATIONS[segmentation])}"
    low, high, closed = SEGMENTATION_LIMITS.get(name, (0.0, math.inf, True))
    if not math.isfinite(value) or value < low or value > high or (not closed and value == low):
        interval = (f"in {'[' if closed else '('}{low:g}, {high:g}]" if math.isfinite(high)
                    else f"{'≥' if closed else '>'} {low:g}")
        return f"must be {interval}, got {value!r}"
    return None
