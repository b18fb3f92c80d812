"""What every explanation-method wrapper shares: model family, patch grid, baselines, reductions,
and the guards that keep a method from leaving anything behind on the model.

Pure compute: no plotting, no file I/O.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Literal, Sequence, Union

import numpy as np
import torch

from ..families import ModelFamily, family_named, family_of

__all__ = [
    "Family",
    "Baseline",
    "baseline_tensor",
    "detect_family",
    "gradients_only_for",
    "input_normalisation",
    "model_grid",
    "patch_size",
    "pool_to_grid",
    "preserved_model_state",
    "seeded",
    "targets_tensor",
]

#: A registered family's name (:mod:`generator.families`); None lets the model's adapter be found.
Family = str
Baseline = Union[Literal["black", "blur", "mean"], torch.Tensor]


def detect_family(model: torch.nn.Module, family: Family | None = None) -> ModelFamily:
    """The family adapter named ``family`` if given, else the one that explains ``model``.

    Raises:
        generator.families.UnsupportedModelError: an unknown family name, or a model no family explains.
    """
    return family_named(family) if family is not None else family_of(model)


def model_grid(model: torch.nn.Module, family: Family | None = None) -> tuple[int, int]:
    """(h, w) token grid that grid-level maps live on, from the family adapter's token layout.

    ViT: the patch grid. Swin: the grid of the last stage (the input grid halved by every patch merging).
    """
    return detect_family(model, family).token_layout(model).grid


def patch_size(model: torch.nn.Module) -> tuple[int, int]:
    """(ph, pw) pixel size of one patch of the model's patch embedding (the family adapter's answer)."""
    return family_of(model).patch_size(model)


def input_normalisation(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel from the model's own timm data config."""
    from timm.data import resolve_model_data_config

    config = resolve_model_data_config(model)
    return tuple(float(m) for m in config["mean"]), tuple(float(s) for s in config["std"])


def baseline_tensor(model: torch.nn.Module, x: torch.Tensor, baseline: Baseline, blur_sigma: float = 5.0) -> torch.Tensor:
    """A reference input in the model's normalised space.

    Args:
        x: (B, 3, H, W) normalised input.
        baseline: "black" (pixel value 0, i.e. ``(0 - mean) / std`` per channel from the model's
            data config), "blur" (each channel gaussian-blurred with ``blur_sigma`` pixels; blurring
            commutes with the per-channel affine normalisation), "mean" (each image's per-channel
            mean), or a tensor broadcastable to ``x``.

    Returns:
        (B, 3, H, W) tensor of ``x``'s dtype and device.
    """
    if isinstance(baseline, torch.Tensor):
        return baseline.to(x).expand_as(x).clone()
    if baseline == "black":
        mean, std = input_normalisation(model)
        if len(mean) != x.shape[1]:
            raise ValueError(f"data config has {len(mean)} channels, input has {x.shape[1]}")
        value = -torch.tensor(mean, dtype=x.dtype, device=x.device) / torch.tensor(std, dtype=x.dtype, device=x.device)
        return value.view(1, -1, 1, 1).expand_as(x).clone()
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if baseline == "blur":
        from scipy.ndimage import gaussian_filter

        arr = x.detach().cpu().double().numpy()
        blurred = gaussian_filter(arr, sigma=(0, 0, blur_sigma, blur_sigma), mode="reflect")
        return torch.from_numpy(blurred).to(x)
    raise ValueError(f"unknown baseline {baseline!r}: use 'black', 'blur', 'mean' or a tensor")


def targets_tensor(targets: Sequence[int], batch: int, device: torch.device) -> torch.Tensor:
    """(B,) long tensor of class indices; one target per image is required."""
    t = torch.as_tensor(list(targets), dtype=torch.long, device=device)
    if t.ndim != 1 or t.numel() != batch:
        raise ValueError(f"need one target per image: {batch} images, {t.numel()} targets")
    return t


def pool_to_grid(pixel_map: np.ndarray, grid: tuple[int, int], reduce: Literal["sum", "mean"] = "sum") -> np.ndarray:
    """Pool a pixel map onto a grid of equal cells.

    Args:
        pixel_map: (B, H, W) with H, W multiples of the grid.
        grid: (h, w).
        reduce: "sum" (relevance per cell; keeps totals) or "mean".

    Returns:
        (B, h, w) float64.
    """
    b, H, W = pixel_map.shape
    h, w = grid
    if H % h or W % w:
        raise ValueError(f"image {H}×{W} does not split into a {h}×{w} grid of equal cells")
    cells = np.asarray(pixel_map, dtype=np.float64).reshape(b, h, H // h, w, W // w)
    return cells.sum(axis=(2, 4)) if reduce == "sum" else cells.mean(axis=(2, 4))


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for the block, leaving the global RNG state as it was afterwards."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def preserved_model_state(model: torch.nn.Module) -> Iterator[None]:
    """Restore every module's ``training`` flag and every parameter's ``.grad`` on exit.

    pytorch-grad-cam calls ``model.eval()`` and ``model.zero_grad()`` and leaves the target's
    gradients in the parameters' ``.grad``; this puts both back as they were, also on error.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, training in modes:
            if m.training is not training:  # Module.__setattr__ is slow; most flags are unchanged
                m.training = training
        for p, grad in grads:
            if p.grad is not grad:
                p.grad = grad


@contextmanager
def gradients_only_for(model: torch.nn.Module, layer: torch.nn.Module) -> Iterator[bool]:
    """Within the block only ``layer``'s parameters require gradients; every flag is restored on exit.

    A ``backward()`` then computes the gradients of the activations from the output down to
    ``layer`` and stops there: no weight gradients of the other layers, and no pass below the layer.
    The gradients it does compute (those of ``layer``'s output) are the same as with every parameter
    trainable. Yields whether ``layer`` has parameters; without any, its output needs an input that
    requires gradients instead.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    kept = {id(p) for p in layer.parameters()}
    changed = [(p, required) for p, required in flags if required != (id(p) in kept)]
    try:
        for p, required in changed:
            p.requires_grad_(not required)
        yield bool(kept)
    finally:
        for p, required in changed:
            p.requires_grad_(required)
