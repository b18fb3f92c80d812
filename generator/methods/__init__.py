"""Relevance-map methods from the field's libraries, behind one signature.

Every method is ``method(model, x, targets, **params) -> np.ndarray`` with ``x`` a (B, 3, H, W)
normalised batch, ``targets`` B class indices, and a float64 map per image:

* :mod:`.cam` (pytorch-grad-cam): Grad-CAM, HiResCAM, Grad-CAM++, EigenCAM, Score-CAM →
  (B, h, w) on the token grid (``size="input"``: the library's (B, H, W) output);
* :mod:`.attribution` (captum): Integrated Gradients, SmoothGrad, Occlusion, KernelSHAP →
  (B, H, W) pixels;
* :mod:`.lrp`: CP-LRP for ViT and Swin → (B, H, W) pixels.

``METHODS`` maps a display name to (function, resolution), resolution being "grid" or "pixel";
:func:`.common.pool_to_grid` takes a pixel map to the grid. Modules import their library lazily.
"""

from __future__ import annotations

from typing import Callable, Literal

from . import attribution, cam, common, lrp

__all__ = ["METHODS", "attribution", "cam", "common", "lrp"]

METHODS: dict[str, tuple[Callable, Literal["grid", "pixel"]]] = {
    **{name: (fn, "grid") for name, fn in cam.CAM_METHODS.items()},
    **{name: (fn, "pixel") for name, fn in attribution.CAPTUM_METHODS.items()},
    "LRP": (lrp.lrp, "pixel"),
}
