"""LIME region explanations on the ``lime`` package, with a vectorised sampler.

Two parts of lime cost more than a small model's forward passes, and both are replaced by
vectorised code that returns the same result:

- ``lime_image.LimeImageExplainer.data_labels`` builds every perturbed image in a Python loop
  (a deepcopy and one boolean mask per hidden superpixel). :class:`BatchedLimeImageExplainer`
  draws the samples with the same single ``random_state.randint`` call and builds each batch
  of perturbed images with one masked copy into a preallocated array.
- ``lime_base.LimeBase.forward_selection`` (lime's choice for ``num_features <= 6``) fits one
  sklearn ``Ridge`` per candidate superpixel per step, ~200 fits per label. :class:`GramLimeBase`
  scores all candidates of a step at once from the weighted, centred Gram matrix: the same
  least-squares fits, the same weighted R², the same first-best tie rule. It hands the
  selection back to lime's loop whenever a fit is ill-conditioned or the labels are constant.

Segmentation, distances, the kernel and the final weighted ridge fit stay lime's own.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from lime import lime_base, lime_image
from lime.wrappers.scikit_image import SegmentationAlgorithm
from timm.data import resolve_model_data_config

from .segmentations import LIME_SEGMENTATIONS
from ..analysis.regions import region_iou  # noqa: F401  (part of this module's API)

__all__ = [
    "BatchedLimeImageExplainer",
    "GramLimeBase",
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


# a candidate fit whose Gram block is worse conditioned than this goes back to lime's own loop,
# where sklearn's Cholesky/SVD fallback decides; scores there could differ from ours in the last bits
_MAX_CONDITION = 1e8


class GramLimeBase(lime_base.LimeBase):
    """``LimeBase`` with a vectorised, result-identical ``forward_selection``."""

    def forward_selection(self, data, labels, weights, num_features):
        """Greedy forward selection by weighted R² of an unregularised least-squares fit.

        Args:
            data: (n, d) 0/1 samples; labels: (n,) the class's probabilities;
            weights: (n,) kernel weights; num_features: how many to pick.

        Returns:
            (min(num_features, d),) int feature indices in the order lime picks them.
        """
        chosen = self._forward_selection_gram(np.asarray(data, dtype=np.float64), np.asarray(labels, dtype=np.float64),
                                              np.asarray(weights, dtype=np.float64), num_features)
        if chosen is None:  # degenerate: let lime (and sklearn's fallbacks) decide, as lime itself does
            return super().forward_selection(data, labels, weights, num_features)
        return chosen

    @staticmethod
    def _forward_selection_gram(data, labels, weights, num_features):
        # sklearn's Ridge(fit_intercept=True) with sample weights: centre by weighted means, then
        # solve (Xc' W Xc) coef = Xc' W yc; its score is r2_score(..., sample_weight=weights)
        total = weights.sum()
        if data.ndim != 2 or labels.ndim != 1 or total <= 0:
            return None
        centred = data - (weights @ data) / total
        target = labels - (weights @ labels) / total
        weighted = centred * weights[:, None]
        gram = centred.T @ weighted  # d, d
        moment = weighted.T @ target  # d
        total_ss = float(weights @ target**2)
        if not np.isfinite(total_ss) or total_ss <= 1e-300:
            return None
        used: list[int] = []
        for _ in range(min(num_features, data.shape[1])):
            candidates = np.array([f for f in range(data.shape[1]) if f not in used])
            index = np.concatenate([np.broadcast_to(np.array(used, dtype=int), (len(candidates), len(used))),
                                    candidates[:, None]], axis=1)  # c, k
            blocks = gram[index[:, :, None], index[:, None, :]]  # c, k, k
            rhs = moment[index]  # c, k
            if np.any(np.linalg.cond(blocks) > _MAX_CONDITION):
                return None
            coef = np.linalg.solve(blocks, rhs[..., None])[..., 0]  # c, k
            # the fitted values, without materialising an (n, c, k) design: shared part + candidate column
            fitted = coef[:, :-1] @ centred[:, used].T + coef[:, -1:] * centred[:, candidates].T  # c, n
            residual_ss = ((target[None, :] - fitted) ** 2) @ weights
            scores = 1.0 - residual_ss / total_ss
            if not np.all(np.isfinite(scores)):
                return None
            used.append(int(candidates[int(np.argmax(scores))]))  # argmax: the first best, as lime's `>`
        return np.array(used)


class BatchedLimeImageExplainer(lime_image.LimeImageExplainer):
    """``LimeImageExplainer`` whose perturbed images are built per batch, vectorised.

    Samples are identical to lime's (same ``random_state`` call); memory is bounded by one
    batch of images whatever ``num_samples`` is. Feature selection runs on :class:`GramLimeBase`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.base = GramLimeBase(self.base.kernel_fn, self.base.verbose, random_state=self.base.random_state)

    def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):
        n_features = np.unique(segments).shape[0]
        data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
        data[0, :] = 1
        # lime hides pixels whose segment label equals a zero column's index; labels ≥ n_features stay
        lookup = np.ones((batch_size, int(segments.max()) + 1), dtype=bool)
        labels = None  # (num_samples, classes), filled batch by batch: no per-sample objects
        for start in range(0, num_samples, batch_size):
            rows = data[start : start + batch_size].astype(bool)
            keep = lookup[: len(rows)].copy()
            keep[:, :n_features] = rows
            visible = np.take(keep, segments, axis=1)[..., None]  # b, H, W, 1
            batch = np.empty((len(rows), *image.shape), dtype=image.dtype)
            batch[:] = fudged_image
            np.copyto(batch, image, where=visible)  # half the time of np.where here
            predictions = np.asarray(classifier_fn(batch))
            if labels is None:
                labels = np.empty((num_samples, *predictions.shape[1:]), dtype=predictions.dtype)
            labels[start : start + len(rows)] = predictions
        return data, labels


def explain_image(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    num_samples: int = 1000,
    top_labels: int = 2,
    num_features: int = 5,
    seed: int = 0,
    batch_size: int | str = "auto",
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
        batch_size: images per forward pass; "auto" picks by the model's FLOPs and device
            (:func:`generator.models.loaded.auto_batch_size`).

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
    if batch_size == "auto":
        from ..models.loaded import auto_batch_size
        from ..models.loading import forward_flops

        device = next(model.parameters()).device
        batch_size = auto_batch_size(forward_flops(model, tuple(image.shape[:2]), device), device)
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
