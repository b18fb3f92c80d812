"""Pixel attributions from captum for timm ViT and Swin: Integrated Gradients, SmoothGrad
(NoiseTunnel over Saliency), Occlusion with patch-sized windows, and KernelSHAP on patch or
superpixel features.

The library does the work; this module builds baselines and feature masks from the model (its
data config and patch size), seeds the stochastic methods without touching the global RNG, and
reduces the (B, 3, H, W) attribution to a 2-D map:

================  =======================================  =======================================
method            map                                      reduction over the 3 channels
================  =======================================  =======================================
integrated_grads  (B, H, W) pixels                         sum of |attr| (abs-sum)
smoothgrad        (B, H, W) pixels                         sum of |mean gradient| (abs-sum)
occlusion         (B, H, W) pixels, constant per window    mean (signed; all channels share it)
kernel_shap       (B, H, W) pixels, constant per feature   mean (signed; all channels share it)
================  =======================================  =======================================

A pixel map goes to the patch grid with :func:`generator.relevance.common.pool_to_grid`
(``reduce="mean"`` gives occlusion's and KernelSHAP's per-patch value back exactly).

Stochastic methods (SmoothGrad, KernelSHAP) run one image at a time under the same seed, so an
image's map does not depend on what else is in the batch. captum registers no hooks for these
methods; the tests check that none are left anyway.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .common import Baseline, Family, baseline_tensor, detect_family, patch_size, seeded, targets_tensor

__all__ = [
    "integrated_gradients",
    "kernel_shap",
    "occlusion",
    "patch_feature_mask",
    "smoothgrad",
]


def _abs_sum(attr: torch.Tensor) -> np.ndarray:
    return attr.detach().abs().sum(dim=1).double().cpu().numpy()


def _channel_mean(attr: torch.Tensor) -> np.ndarray:
    return attr.detach().double().mean(dim=1).cpu().numpy()


def integrated_gradients(model: torch.nn.Module, x: torch.Tensor, targets: Sequence[int], *,
                         baseline: Baseline = "black", blur_sigma: float = 5.0, n_steps: int = 50,
                         method: str = "gausslegendre", internal_batch_size: int | None = None,
                         family: Family | None = None) -> np.ndarray:
    """Integrated Gradients (captum ``IntegratedGradients``) from a baseline to ``x``.

    Args:
        model: a timm ViT or Swin classifier (eval mode).
        x: (B, 3, H, W) normalised input.
        targets: B class indices.
        baseline: "black" (pixel 0 → ``-mean/std``), "blur" (gaussian, ``blur_sigma`` pixels),
            "mean" (per-image channel mean), or a tensor; see :func:`common.baseline_tensor`.
        n_steps: integration points; method: captum's quadrature ("gausslegendre", "riemann_trapezoid", ...).
        internal_batch_size: scaled inputs per forward pass (None: all ``n_steps`` × B at once).

    Returns:
        (B, H, W) float64: sum over channels of |attribution|.
    """
    from captum.attr import IntegratedGradients

    detect_family(model, family)
    target = targets_tensor(targets, x.shape[0], x.device)
    attr = IntegratedGradients(model).attribute(x, baselines=baseline_tensor(model, x, baseline, blur_sigma),
                                                target=target, n_steps=n_steps, method=method,
                                                internal_batch_size=internal_batch_size)
    return _abs_sum(attr)


def smoothgrad(model: torch.nn.Module, x: torch.Tensor, targets: Sequence[int], *, nt_samples: int = 25,
               stdevs: float = 0.3, nt_samples_batch_size: int | None = None, seed: int = 0,
               family: Family | None = None) -> np.ndarray:
    """SmoothGrad: captum ``NoiseTunnel(Saliency(model))`` with ``nt_type="smoothgrad"``.

    The gradient (``abs=False``) is averaged over ``nt_samples`` noisy copies, then the absolute
    value is summed over channels (Smilkov et al. 2017 average the raw gradients).

    Args:
        stdevs: standard deviation of the gaussian noise in the normalised input's units
            (a normalised image spans roughly 3 to 5 units).
        nt_samples_batch_size: noisy copies per forward pass (None: all at once).
        seed: torch seed for the noise; each image is run alone under this seed, inside
            ``torch.random.fork_rng`` so the global RNG is left as it was.

    Returns:
        (B, H, W) float64: sum over channels of |mean gradient|.
    """
    from captum.attr import Saliency

    detect_family(model, family)
    target = targets_tensor(targets, x.shape[0], x.device)
    tunnel = _cpu_noise_tunnel()(Saliency(model))
    maps = []
    for i in range(x.shape[0]):
        with seeded(seed, x.device):
            attr = tunnel.attribute(x[i:i + 1], nt_type="smoothgrad", nt_samples=nt_samples, stdevs=stdevs,
                                    nt_samples_batch_size=nt_samples_batch_size, target=target[i:i + 1], abs=False)
        maps.append(_abs_sum(attr))
    return np.concatenate(maps)


def _cpu_noise_tunnel():
    """captum's ``NoiseTunnel``, with its noise drawn by the CPU generator and moved to the input's device.

    torch's CUDA generator draws another stream than the CPU's for the same seed, so noise drawn on
    the device would make a seeded SmoothGrad map depend on where it ran. The subclass changes only
    where ``_add_noise_to_input`` draws; on the CPU it is the library's own draw, number for number.
    """
    from captum.attr import NoiseTunnel

    class CpuNoiseTunnel(NoiseTunnel):
        @staticmethod
        def _add_noise_to_input(input: torch.Tensor, stdev: float, nt_samples_partition: int) -> torch.Tensor:
            noisy = NoiseTunnel._add_noise_to_input(input.detach().cpu(), stdev, nt_samples_partition)
            return noisy.to(input.device)

    return CpuNoiseTunnel


def occlusion(model: torch.nn.Module, x: torch.Tensor, targets: Sequence[int], *, baseline: Baseline = "mean",
              blur_sigma: float = 5.0, window: tuple[int, int] | None = None, perturbations_per_eval: int = 16,
              family: Family | None = None) -> np.ndarray:
    """Occlusion (captum ``Occlusion``): the drop in the target logit when a window is replaced by the baseline.

    Args:
        baseline: what fills an occluded window; see :func:`common.baseline_tensor` (default: the
            image's channel mean).
        window: (wh, ww) window in pixels; default the model's patch size, so each window is one
            patch (``sliding_window_shapes=(3, ph, pw)``, ``strides=(3, ph, pw)``).
        perturbations_per_eval: occluded copies per forward pass.

    Returns:
        (B, H, W) float64, signed: logit(x) − logit(x with the window occluded), equal over the
        window's pixels (channel mean of captum's per-channel copies).
    """
    from captum.attr import Occlusion

    detect_family(model, family)
    target = targets_tensor(targets, x.shape[0], x.device)
    ph, pw = window if window is not None else patch_size(model)
    channels = x.shape[1]
    attr = Occlusion(model).attribute(x, sliding_window_shapes=(channels, ph, pw), strides=(channels, ph, pw),
                                      baselines=baseline_tensor(model, x, baseline, blur_sigma), target=target,
                                      perturbations_per_eval=perturbations_per_eval)
    return _channel_mean(attr)


def patch_feature_mask(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) long tensor: the row-major patch index of every pixel (patch size from the model)."""
    ph, pw = patch_size(model)
    H, W = x.shape[-2:]
    if H % ph or W % pw:
        raise ValueError(f"input {H}×{W} does not split into {ph}×{pw} patches")
    rows = torch.arange(H, device=x.device) // ph
    cols = torch.arange(W, device=x.device) // pw
    return (rows[:, None] * (W // pw) + cols[None, :]).view(1, 1, H, W)


def kernel_shap(model: torch.nn.Module, x: torch.Tensor, targets: Sequence[int], *, n_samples: int = 200,
                baseline: Baseline = "mean", blur_sigma: float = 5.0, segments: np.ndarray | None = None,
                perturbations_per_eval: int = 16, seed: int = 0, family: Family | None = None) -> np.ndarray:
    """KernelSHAP (captum ``KernelShap``) over patch features or given superpixels.

    Args:
        n_samples: coalitions sampled per image.
        baseline: what an absent feature is filled with; see :func:`common.baseline_tensor`.
        segments: None for one feature per patch (patch size from the model), or an integer
            segmentation, (H, W) shared or (B, H, W) per image, labels 0..k-1.
        perturbations_per_eval: coalitions per forward pass.
        seed: torch seed for the coalition sampling; each image runs alone under this seed inside
            ``torch.random.fork_rng``.

    Returns:
        (B, H, W) float64, signed: each feature's Shapley estimate on all its pixels.
    """
    from captum.attr import KernelShap

    detect_family(model, family)
    target = targets_tensor(targets, x.shape[0], x.device)
    base = baseline_tensor(model, x, baseline, blur_sigma)
    if segments is None:
        masks = [patch_feature_mask(model, x)] * x.shape[0]
    else:
        seg = torch.as_tensor(np.asarray(segments), dtype=torch.long, device=x.device)
        if seg.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"segments of shape {tuple(seg.shape)} do not match the input's {tuple(x.shape[-2:])}")
        masks = [(seg if seg.ndim == 2 else seg[i]).view(1, 1, *x.shape[-2:]) for i in range(x.shape[0])]
    explainer = KernelShap(model)
    maps = []
    for i in range(x.shape[0]):
        with seeded(seed, x.device):
            attr = explainer.attribute(x[i:i + 1], baselines=base[i:i + 1], target=target[i:i + 1],
                                       feature_mask=masks[i], n_samples=n_samples,
                                       perturbations_per_eval=perturbations_per_eval)
        maps.append(_channel_mean(attr))
    return np.concatenate(maps)

