"""LIME region explanations on the ``lime`` package, with a vectorised sampler.

``lime_image.LimeImageExplainer.data_labels`` builds every perturbed image in a Python loop
(a deepcopy and one boolean mask per hidden superpixel). :class:`BatchedLimeImageExplainer`
overrides only that method: the same single ``random_state.randint`` call draws the same
samples, and each batch of perturbed images is built with one ``np.where``. Segmentation,
distances, the kernel and the weighted ridge fit stay lime's own.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from lime import lime_image
from lime.wrappers.scikit_image import SegmentationAlgorithm
from timm.data import resolve_model_data_config

from .config import LIME_SEGMENTATIONS

__all__ = [
    "BatchedLimeImageExplainer",
    "SEGMENTATIONS",
    "explain_image",
    "predict_fn",
    "region_iou",
    "region_mask",
    "weight_map",
]

SEGMENTATIONS = LIME_SEGMENTATIONS


def predict_fn(model: torch.nn.Module, batch_size: int = 64, device: torch.device | str | None = None) -> Callable:
    """A LIME classifier function for a timm model.

    Args:
        model: a timm model; its normalisation comes from ``resolve_model_data_config(model)``.
        batch_size: images per forward pass.

    Returns:
        f(images) with images (n, H, W, 3) uint8 at the model's input size → (n, classes)
        float64 softmax probabilities, computed in inference mode.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    config = resolve_model_data_config(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    mean = torch.tensor(config["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(config["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0

    def classify(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (n, H, W, 3) images, got shape {images.shape}")
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
                x = (chunk.permute(0, 3, 1, 2).float() - mean) / std
                out.append(model(x).float().softmax(-1).cpu().double().numpy())
        return np.concatenate(out) if out else np.zeros((0, model.num_classes))

    return classify


class BatchedLimeImageExplainer(lime_image.LimeImageExplainer):
    """``LimeImageExplainer`` whose perturbed images are built per batch, vectorised.

    Samples are identical to lime's (same ``random_state`` call); memory is bounded by one
    batch of images whatever ``num_samples`` is.
    """

    def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):
        n_features = np.unique(segments).shape[0]
        data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
        data[0, :] = 1
        # lime hides pixels whose segment label equals a zero column's index; labels ≥ n_features stay
        lookup = np.ones((batch_size, int(segments.max()) + 1), dtype=bool)
        labels = []
        for start in range(0, num_samples, batch_size):
            rows = data[start : start + batch_size].astype(bool)
            keep = lookup[: len(rows)].copy()
            keep[:, :n_features] = rows
            visible = keep[:, segments][..., None]  # b, H, W, 1
            labels.extend(classifier_fn(np.where(visible, image[None], fudged_image[None])))
        return data, np.array(labels)


def explain_image(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    num_samples: int = 1000,
    top_labels: int = 2,
    num_features: int = 5,
    seed: int = 0,
    batch_size: int = 64,
    hide_color=None,
    segmentation: str = "quickshift",
    segmentation_params: dict | None = None,
    classifier_fn: Callable | None = None,
    labels: tuple[int, ...] | None = None,
) -> lime_image.ImageExplanation:
    """Explain one image with LIME; returns lime's own ``ImageExplanation``.

    Equal to ``lime_image.LimeImageExplainer(random_state=seed).explain_instance(image,
    predict_fn(model, 10), top_labels=top_labels, num_samples=num_samples,
    num_features=num_features, random_seed=seed)`` for the default quickshift segmentation.

    Args:
        image: (H, W, 3) uint8 at the model's input size.
        hide_color: None hides each superpixel with its mean colour (lime's default).
        segmentation: "quickshift", "slic" or "felzenszwalb", with ``segmentation_params``
            over lime's defaults.
        labels: explain exactly these classes instead of the ``top_labels`` best ones.

    Raises:
        ValueError: num_samples < 2, num_features < 1, an unknown segmentation, or top_labels
            outside 1…classes.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be ≥ 2, got {num_samples}")
    if num_features < 1:
        raise ValueError(f"num_features must be ≥ 1, got {num_features}")
    if segmentation not in SEGMENTATIONS:
        raise ValueError(f"unknown segmentation {segmentation!r}; use one of {sorted(SEGMENTATIONS)}")
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if labels is not None:
        top_labels = None
    elif not 1 <= top_labels <= num_classes:
        raise ValueError(f"top_labels must be in 1…{num_classes} (the model's classes), got {top_labels}")
    params = {**SEGMENTATIONS[segmentation], **(segmentation_params or {})}
    unknown = set(params) - set(SEGMENTATIONS[segmentation])
    if unknown:
        raise ValueError(f"unknown {segmentation} parameters {sorted(unknown)}; known: {sorted(SEGMENTATIONS[segmentation])}")
    segmenter = SegmentationAlgorithm(segmentation, random_seed=seed, **params)
    explainer = BatchedLimeImageExplainer(random_state=seed)
    return explainer.explain_instance(
        image,
        classifier_fn or predict_fn(model, batch_size),
        labels=labels if labels is not None else (1,),
        top_labels=top_labels,
        num_samples=num_samples,
        num_features=num_features,
        batch_size=batch_size,
        hide_color=hide_color,
        segmentation_fn=segmenter,
        random_seed=seed,
    )


def region_mask(explanation: lime_image.ImageExplanation, label: int, num_features: int, positive: bool = True) -> np.ndarray:
    """The union of the ``num_features`` strongest superpixels that support (or oppose) ``label``.

    Returns:
        (H, W) bool.
    """
    weights = [(seg, w) for seg, w in explanation.local_exp[label] if (w > 0 if positive else w < 0)]
    chosen = [seg for seg, _ in weights[:num_features]]
    return np.isin(explanation.segments, chosen)


def weight_map(explanation: lime_image.ImageExplanation, label: int) -> np.ndarray:
    """Every superpixel painted with its LIME weight for ``label``. Returns (H, W) float."""
    out = np.zeros(explanation.segments.shape, dtype=np.float64)
    for seg, w in explanation.local_exp[label]:
        out[explanation.segments == seg] = w
    return out


def region_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape (1.0 when both are empty)."""
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
