"""Relevance-map methods from the field's libraries, behind one signature.

Every method is ``method(model, x, targets, **params) -> np.ndarray`` with ``x`` a (B, 3, H, W)
normalised batch, ``targets`` B class indices, and a float64 map per image:

* :mod:`.cam` (pytorch-grad-cam): Grad-CAM, HiResCAM, Grad-CAM++, EigenCAM, Score-CAM →
  (B, h, w) on the token grid (``size="input"``: the library's (B, H, W) output);
* :mod:`.attribution` (captum): Integrated Gradients, SmoothGrad, Occlusion, KernelSHAP →
  (B, H, W) pixels;
* :mod:`.lrp`: CP-LRP for ViT and Swin → (B, H, W) pixels.

:mod:`.registered` puts every one of them on the relevance-map registry
(:mod:`generator.relevance`), each class naming the function it wraps (``wraps``) and its
resolution ("grid" or "pixel"; :func:`.common.pool_to_grid` takes a pixel map to the grid);
:mod:`generator.sections` imports it, so they register whenever a config is loaded. Submodules (and torch, timm and the libraries) are imported on first use, so
loading a config stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["attention_maps", "attribution", "cam", "common", "lime_map", "lrp", "registered"]

_SUBMODULES = ("attention_maps", "attribution", "cam", "common", "lime_map", "lrp", "registered")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
