"""Class activation maps from pytorch-grad-cam (``grad-cam`` on PyPI) for timm ViT and Swin.

The library does the work; this module only picks the target layer, turns the token sequence into
a channels-first feature map, and releases the library's hooks in ``finally``.

Target layer: the last block's ``norm1`` (the input to its attention), as the library's own ViT and
Swin examples do. Its output is

* ViT: (B, prefix + h·w, C) tokens. The prefix tokens (class, distillation, registers: their number
  from the family adapter's token layout) are dropped and the rest reshaped to the
  (h, w) patch grid.
* Swin: (B, h, w, C) channels-last on the last stage's grid; permuted to channels-first.

Resolution. The CAM lives on the (h, w) token grid. pytorch-grad-cam then (per image) clips it at 0,
min-max scales it to [0, 1] (``scale_cam_image``) and resizes it to the input size with
``cv2.resize`` (bilinear), then min-max scales again. With ``size="grid"`` (the default) the CAM
object's ``get_target_width_height`` is pointed, on that instance only, at the grid, so the same
library code runs with an identity resize and the result is the (B, h, w) grid map (still clipped
and min-max scaled by the library). ``size="input"`` returns the library's own (B, H, W) output
unchanged.

Library quirks handled here:

* the CAM object's ``__exit__`` prints and swallows ``IndexError``; the ``with`` form is not used,
  hooks are released in ``finally`` with ``activations_and_grads.release()``;
* ``BaseCAM.__init__`` calls ``model.eval()`` and gradient methods call ``model.zero_grad()`` and
  then ``backward()``, which fills the parameters' ``.grad``; modes and ``.grad`` are restored;
* that ``backward()`` would also compute every weight gradient of the model, which no CAM reads
  (about as much work again as the activation gradients). During the call only the target layer's
  parameters require gradients (:func:`common.gradients_only_for`), so the backward pass runs from
  the logit down to the target layer and stops; the map is the same, bit for bit;
* ScoreCAM draws a tqdm progress bar on stderr and runs one forward pass per channel
  (C forwards per image, in batches of ``batch_size``);
* EigenCAM ignores the target (first principal component of the activations; its sign is
  whatever the SVD returns, and the map is then clipped at 0).
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import numpy as np
import torch

from .common import Family, detect_family, gradients_only_for, preserved_model_state, targets_tensor

__all__ = [
    "cam_target_layer",
    "cam_reshape_transform",
    "eigencam",
    "gradcam",
    "gradcam_plusplus",
    "hirescam",
    "run_cam",
    "scorecam",
]

Size = Literal["grid", "input"]


def cam_target_layer(model: torch.nn.Module, family: Family | None = None) -> torch.nn.Module:
    """The family adapter's CAM target layer (the last block's ``norm1`` for ViT and Swin)."""
    return detect_family(model, family).cam_target_layer(model)


def cam_reshape_transform(model: torch.nn.Module, family: Family | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The family adapter's reshape: the target layer's output → a (B, C, h, w) feature map."""
    return detect_family(model, family).cam_reshape(model)


def run_cam(cam_class: type, model: torch.nn.Module, x: torch.Tensor, targets: Sequence[int], *,
            family: Family | None = None, size: Size = "grid", batch_size: int | None = None) -> np.ndarray:
    """Run one pytorch-grad-cam method and release its hooks.

    Args:
        cam_class: a ``pytorch_grad_cam`` class (``GradCAM``, ``HiResCAM``, ...).
        model: a timm VisionTransformer or SwinTransformer.
        x: (B, 3, H, W) normalised input.
        targets: B class indices, one per image.
        family: a registered family's name; the model's own adapter when None.
        size: "grid" for the (B, h, w) token-grid map, "input" for the library's (B, H, W) output.
        batch_size: ScoreCAM only: masked images per forward pass (the library's default is 16).

    Returns:
        (B, h, w) or (B, H, W) float64, each image's map clipped at 0 and min-max scaled to [0, 1]
        by the library (all zeros when the CAM is nowhere positive).
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    adapter = detect_family(model, family)
    targets_tensor(targets, x.shape[0], x.device)  # validates the count
    grid = adapter.token_layout(model).grid
    layer = adapter.cam_target_layer(model)
    with preserved_model_state(model), gradients_only_for(model, layer) as layer_has_parameters:
        if not layer_has_parameters:  # its output requires gradients only through the input
            x = x.detach().requires_grad_(True)
        cam = cam_class(model=model, target_layers=[layer], reshape_transform=adapter.cam_reshape(model))
        try:
            if batch_size is not None:
                cam.batch_size = int(batch_size)
            if size == "grid":
                cam.get_target_width_height = lambda _input: (grid[1], grid[0])  # cv2 sizes are (width, height)
            elif size != "input":
                raise ValueError(f"unknown size {size!r}: use 'grid' or 'input'")
            # EigenCAM and Score-CAM read no gradient, so their passes build no graph; the others need one
            # even when the caller turned gradients off
            with torch.set_grad_enabled(bool(cam.uses_gradients)):
                out = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
            if not cam.activations_and_grads.activations:
                raise RuntimeError("the CAM target layer captured no activations")
        finally:
            cam.activations_and_grads.release()
            cam.outputs = None  # drop the graph the library keeps
    return np.asarray(out, dtype=np.float64)


def gradcam(model: torch.nn.Module, x: torch.Tensor, targets: Sequence[int], *, family: Family | None = None,
            size: Size = "grid") -> np.ndarray:
    """Grad-CAM: channels weighted by their spatially averaged gradient. See :func:`run_cam`."""
    from pytorch_grad_cam import GradCAM

    return run_cam(GradCAM, model, x, targets, family=family, size=size)


def hirescam(model: torch.nn.Module, x: torch.Tensor, targets: Sequence[int], *, family: Family | None = None,
             size: Size = "grid") -> np.ndarray:
    """HiResCAM: element-wise gradient × activation summed over channels. See :func:`run_cam`."""
    from pytorch_grad_cam import HiResCAM

    return run_cam(HiResCAM, model, x, targets, family=family, size=size)


def gradcam_plusplus(model: torch.nn.Module, x: torch.Tensor, targets: Sequence[int], *,
                     family: Family | None = None, size: Size = "grid") -> np.ndarray:
    """Grad-CAM++ (``GradCAMPlusPlus``): higher-order gradient weights. See :func:`run_cam`."""
    from pytorch_grad_cam import GradCAMPlusPlus

    return run_cam(GradCAMPlusPlus, model, x, targets, family=family, size=size)


def eigencam(model: torch.nn.Module, x: torch.Tensor, targets: Sequence[int], *, family: Family | None = None,
             size: Size = "grid") -> np.ndarray:
    """EigenCAM: projection on the activations' first principal component; ``targets`` do not
    change the map (they are checked for count only). See :func:`run_cam`."""
    from pytorch_grad_cam import EigenCAM

    return run_cam(EigenCAM, model, x, targets, family=family, size=size)


def scorecam(model: torch.nn.Module, x: torch.Tensor, targets: Sequence[int], *, family: Family | None = None,
             size: Size = "grid", batch_size: int = 16) -> np.ndarray:
    """Score-CAM: channels weighted by the softmax over channels of the target logit of the input
    masked by each (upsampled, min-max scaled) channel; C forward passes per image in batches of
    ``batch_size``. See :func:`run_cam`."""
    from pytorch_grad_cam import ScoreCAM

    return run_cam(ScoreCAM, model, x, targets, family=family, size=size, batch_size=batch_size)

