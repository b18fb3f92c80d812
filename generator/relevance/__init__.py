"""Relevance maps: the registry of methods (:mod:`.registry`) and the methods themselves.

Every method is a :class:`~.registry.RelevanceMethod` registered with
:func:`~.registry.register_method`, one module per kind: the maps read from attention in
:mod:`.attention_maps`, LIME's in :mod:`.lime_map`, the field's libraries' methods in
:mod:`.library`, each naming the function it wraps:

* :mod:`.cam` (pytorch-grad-cam): Grad-CAM, HiResCAM, Grad-CAM++, EigenCAM, Score-CAM →
  (B, h, w) on the token grid;
* :mod:`.attribution` (captum): Integrated Gradients, SmoothGrad, Occlusion, KernelSHAP →
  (B, H, W) pixels;
* :mod:`.lrp`: CP-LRP → (B, H, W) pixels; :mod:`.lime`: LIME's regions.

Every wrapped function is ``fn(model, x, targets, **params) -> np.ndarray`` with ``x`` a
(B, 3, H, W) normalised batch and ``targets`` B class indices. torch, timm and the libraries are
imported on first use, so loading a config stays light.
"""

from .registry import (MapSpec, MethodSettings, RelevanceMap, RelevanceMethod, RelevanceStore, map_specs,
                       register_method, registered_methods, unregister_method)

__all__ = ["MapSpec", "MethodSettings", "RelevanceMap", "RelevanceMethod", "RelevanceStore", "map_specs",
           "register_method", "registered_methods", "unregister_method"]
