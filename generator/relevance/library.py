"""The library methods of :mod:`generator.relevance` on the relevance-map registry.

One :class:`~generator.relevance.registry.RelevanceMethod` per method, each with its own settings (the
``[methods.<name>]`` table: ``enabled`` plus the method's parameters, with their limits). ``map``
runs the wrapper on the one image (a batch of 1, on the model's device) and returns the wrapper's
map for it unchanged: the (h, w) token grid for the CAMs, (H, W) pixels for captum and LRP. The
only things decided here are the parameters the wrapper receives: "auto" batch sizes follow the
model's own rule (:meth:`generator.models.loaded.LoadedModel.batch_size`), KernelSHAP's superpixels
come from SLIC on the image the model sees, and LRP reports its conservation terms in the map's meta.

Imported by :mod:`generator.sections`, so the methods register whenever a config is loaded; torch,
timm and the libraries are imported inside ``map`` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

import numpy as np
from pydantic import Field, Strict

from .registry import MethodSettings, RelevanceMap, RelevanceMethod, register_method
from ..config.settings import BatchSize, Float, Int

if TYPE_CHECKING:
    import torch

    from ..data.inputs import ModelInput
    from ..models.loaded import LoadedModel

__all__ = ["CamMethod", "EigenCamMethod", "GradCamMethod", "GradCamPlusPlusMethod", "HiResCamMethod",
           "IntegratedGradientsMethod", "KernelShapMethod", "LrpMethod", "OcclusionMethod", "ScoreCamMethod",
           "SmoothGradMethod"]

PositiveInt = Annotated[int, Strict(), Field(ge=1)]
Fill = Literal["black", "blur", "mean"]


def _batch(model: LoadedModel, setting: int | str) -> int:
    """Inputs per forward pass: an explicit positive integer, or the model's "auto" rule."""
    return model.batch_size(setting)


class _LibraryMethod(RelevanceMethod):
    """Shared ``map``: the wrapped function on a batch of one image, its map for that image, unchanged."""

    #: ``"grid"`` (the token grid) or ``"pixel"`` (the input size).
    resolution: ClassVar[str] = "pixel"

    def call(self, model: LoadedModel, x: torch.Tensor, targets: list[int]) -> np.ndarray:
        """The wrapper with this method's settings: (B, 3, H, W) → (B, h, w)."""
        raise NotImplementedError

    def meta(self, model: LoadedModel, x: torch.Tensor, target: int) -> dict[str, Any]:
        return {"resolution": self.resolution}

    def batch(self, value: int | str, auto: int) -> int:
        """A batch-size setting as the bench counts it: ``auto`` stands for the model's rule."""
        return auto if value == "auto" else int(value)

    def map(self, model: LoadedModel, inputs: ModelInput, target: int) -> RelevanceMap:
        x = inputs.x[None].to(model.device)
        out = self.call(model, x, [int(target)])
        return RelevanceMap(np.asarray(out[0], dtype=np.float64), self.meta(model, x, target))


# --------------------------------------------------------------------------- pytorch-grad-cam


class CamMethod(_LibraryMethod):
    """A pytorch-grad-cam method on the family's CAM target layer, on the model's token grid."""

    resolution = "grid"

    def call(self, model, x, targets):
        return self.wrapped()(model.module, x, targets, family=model.family, size="grid")

    def passes(self, module, batch, x):
        """One forward with the gradient at the target layer (no CAM reads anything below it)."""
        return [(1, 1, "layer-gradient")]


@register_method
class GradCamMethod(CamMethod):
    name = "grad-cam"
    label = "Grad-CAM"
    wraps = "generator.relevance.cam:gradcam"
    description = ("Grad-CAM (pytorch-grad-cam) on the last block's norm1: token channels weighted by their mean "
                   "gradient for the class, clipped at 0, min-max scaled, on the token grid")


@register_method
class HiResCamMethod(CamMethod):
    name = "hirescam"
    label = "HiResCAM"
    wraps = "generator.relevance.cam:hirescam"
    description = ("HiResCAM (pytorch-grad-cam) on the last block's norm1: gradient × activation summed over "
                   "channels per token, clipped at 0, min-max scaled")


@register_method
class GradCamPlusPlusMethod(CamMethod):
    name = "grad-cam-plusplus"
    label = "Grad-CAM++"
    wraps = "generator.relevance.cam:gradcam_plusplus"
    description = ("Grad-CAM++ (pytorch-grad-cam) on the last block's norm1: channels weighted by positive "
                   "higher-order gradient terms")


@register_method
class EigenCamMethod(CamMethod):
    name = "eigencam"
    label = "EigenCAM"
    wraps = "generator.relevance.cam:eigencam"
    description = ("EigenCAM (pytorch-grad-cam): the last block's norm1 tokens projected on their first principal "
                   "component; class-agnostic, and the component's sign is the SVD's")

    def passes(self, module, batch, x):
        return [(1, 1, "forward")]


class ScoreCamSettings(MethodSettings):
    """Score-CAM. Costly: one forward pass per channel of the target layer (768 for ViT-B/16, per image)."""

    #: Masked images per forward pass; "auto": the model's batch rule.
    batch_size: BatchSize = "auto"


@register_method
class ScoreCamMethod(CamMethod):
    name = "score-cam"
    label = "Score-CAM"
    wraps = "generator.relevance.cam:scorecam"
    Settings = ScoreCamSettings
    description = ("Score-CAM (pytorch-grad-cam): channels weighted by the class score of the input masked by each "
                   "channel; one forward pass per channel")

    def call(self, model, x, targets):
        return self.wrapped()(model.module, x, targets, family=model.family, size="grid",
                        batch_size=_batch(model, self.settings.batch_size))

    def passes(self, module, batch, x):
        """One forward, then one masked forward per channel of the family's CAM target layer."""
        from .common import detect_family

        channels = detect_family(module).cam_target_layer(module).normalized_shape[0]
        return [(1, 1, "forward"), (channels, self.batch(self.settings.batch_size, batch), "forward")]


# --------------------------------------------------------------------------- captum


class IntegratedGradientsSettings(MethodSettings):
    """Integrated Gradients from a baseline image to the input."""

    #: The reference image: "black" (pixel 0 in the model's normalisation), "blur" (gaussian, ``blur_sigma``
    #: pixels) or "mean" (the image's channel mean).
    baseline: Fill = "black"
    blur_sigma: Float = Field(default=5.0, gt=0)
    #: Integration points (captum's Gauss-Legendre quadrature).
    n_steps: Int = Field(default=50, ge=2, le=1000)
    #: Scaled inputs per forward/backward pass; "auto": the model's batch rule.
    internal_batch_size: BatchSize = "auto"


@register_method
class IntegratedGradientsMethod(_LibraryMethod):
    name = "integrated-gradients"
    label = "Integrated Gradients"
    wraps = "generator.relevance.attribution:integrated_gradients"
    Settings = IntegratedGradientsSettings
    description = ("Integrated Gradients (captum) from a baseline image: |attribution| summed over channels, "
                   "per pixel")

    def call(self, model, x, targets):
        s = self.settings
        return self.wrapped()(model.module, x, targets, baseline=s.baseline, blur_sigma=s.blur_sigma,
                                    n_steps=s.n_steps, internal_batch_size=_batch(model, s.internal_batch_size),
                                    family=model.family)

    def passes(self, module, batch, x):
        s = self.settings
        return [(s.n_steps, self.batch(s.internal_batch_size, batch), "input-gradient")]


class SmoothGradSettings(MethodSettings):
    """SmoothGrad: the input gradient averaged over noisy copies (captum NoiseTunnel over Saliency)."""

    nt_samples: Int = Field(default=25, ge=1, le=1000)
    #: Noise standard deviation in the normalised input's units (an image spans about 3 to 5 of them).
    stdevs: Float = Field(default=0.3, gt=0, le=10)
    #: Torch seed of the noise (run in a forked RNG: the global one is untouched).
    seed: Int = Field(default=0, ge=0)
    #: Noisy copies per forward/backward pass; "auto": the model's batch rule.
    batch_size: BatchSize = "auto"


@register_method
class SmoothGradMethod(_LibraryMethod):
    name = "smoothgrad"
    label = "SmoothGrad"
    wraps = "generator.relevance.attribution:smoothgrad"
    Settings = SmoothGradSettings
    description = "SmoothGrad (captum NoiseTunnel over Saliency): |mean gradient over noisy copies| summed over channels"

    def call(self, model, x, targets):
        s = self.settings
        return self.wrapped()(model.module, x, targets, nt_samples=s.nt_samples, stdevs=s.stdevs,
                          nt_samples_batch_size=_batch(model, s.batch_size), seed=s.seed, family=model.family)

    def passes(self, module, batch, x):
        s = self.settings
        return [(s.nt_samples, self.batch(s.batch_size, batch), "input-gradient")]


class OcclusionSettings(MethodSettings):
    """Occlusion: the drop of the class logit when a window is filled with the baseline."""

    #: "patch" (the model's patch size: one window per patch) or [height, width] in pixels (stride = window).
    window: Union[Literal["patch"], tuple[PositiveInt, PositiveInt]] = "patch"
    baseline: Fill = "mean"
    blur_sigma: Float = Field(default=5.0, gt=0)
    #: Occluded copies per forward pass; "auto": the model's batch rule.
    batch_size: BatchSize = "auto"


@register_method
class OcclusionMethod(_LibraryMethod):
    name = "occlusion"
    label = "Occlusion"
    wraps = "generator.relevance.attribution:occlusion"
    Settings = OcclusionSettings
    description = ("Occlusion (captum) with patch-sized windows by default: the class logit's drop when the window is "
                   "filled with the baseline (signed)")

    def call(self, model, x, targets):
        s = self.settings
        return self.wrapped()(model.module, x, targets, baseline=s.baseline, blur_sigma=s.blur_sigma,
                         window=None if s.window == "patch" else tuple(s.window),
                         perturbations_per_eval=_batch(model, s.batch_size), family=model.family)

    def passes(self, module, batch, x):
        """One forward, then one per window."""
        from .common import patch_size

        s = self.settings
        ph, pw = patch_size(module) if s.window == "patch" else s.window
        windows = (x.shape[-2] // ph) * (x.shape[-1] // pw)
        return [(1, 1, "forward"), (windows, self.batch(s.batch_size, batch), "forward")]


class KernelShapSettings(MethodSettings):
    """KernelSHAP over patch or superpixel features."""

    #: "patch": one feature per patch of the model; "superpixel": SLIC segments of the image the model sees.
    features: Literal["patch", "superpixel"] = "patch"
    #: SLIC's target number of segments (features = "superpixel").
    superpixels: Int = Field(default=50, ge=2, le=2000)
    #: SLIC's colour/space balance (higher: more square segments; noisy images need it high).
    compactness: Float = Field(default=10.0, gt=0)
    #: Coalitions sampled per image (one forward pass each).
    n_samples: Int = Field(default=200, ge=2, le=100_000)
    #: What an absent feature is filled with.
    baseline: Fill = "mean"
    blur_sigma: Float = Field(default=5.0, gt=0)
    #: Torch seed of the coalition sampling (forked RNG).
    seed: Int = Field(default=0, ge=0)
    #: Coalitions per forward pass; "auto": the model's batch rule.
    batch_size: BatchSize = "auto"


def slic_segments(view: np.ndarray, n_segments: int, compactness: float = 10.0) -> np.ndarray:
    """(H, W) int labels 0..k-1 of SLIC superpixels of ``view`` (H, W, 3) uint8 (skimage; deterministic)."""
    from skimage.segmentation import slic

    labels = slic(view, n_segments=n_segments, compactness=compactness, start_label=0)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int64)


@register_method
class KernelShapMethod(_LibraryMethod):
    name = "kernel-shap"
    label = "KernelSHAP"
    wraps = "generator.relevance.attribution:kernel_shap"
    Settings = KernelShapSettings
    description = ("KernelSHAP (captum) over patch features (or SLIC superpixels): each feature's Shapley estimate "
                   "for the class logit (signed)")

    def map(self, model: LoadedModel, inputs: ModelInput, target: int) -> RelevanceMap:
        s = self.settings
        segments = slic_segments(inputs.view, s.superpixels, s.compactness) if s.features == "superpixel" else None
        x = inputs.x[None].to(model.device)
        out = self.run(model, x, [int(target)], segments)
        meta = {"resolution": self.resolution, "features": int(len(np.unique(segments))) if segments is not None
                else int(np.prod(x.shape[-2:]) // np.prod(model.adapter.patch_size(model.module)))}
        return RelevanceMap(np.asarray(out[0], dtype=np.float64), meta)

    def run(self, model, x, targets, segments):
        s = self.settings
        return self.wrapped()(model.module, x, targets, n_samples=s.n_samples, baseline=s.baseline,
                           blur_sigma=s.blur_sigma, segments=segments,
                           perturbations_per_eval=_batch(model, s.batch_size), seed=s.seed, family=model.family)

    def passes(self, module, batch, x):
        """``n_samples`` forwards (captum's first two coalitions, whole and empty, need no extra pass)."""
        s = self.settings
        return [(s.n_samples, self.batch(s.batch_size, batch), "forward")]


# --------------------------------------------------------------------------- LRP


@register_method
class LrpMethod(_LibraryMethod):
    needs = frozenset({"lrp", "classifier-head"})
    name = "lrp"
    label = "LRP"
    wraps = "generator.relevance.lrp:lrp"
    description = ("CP-LRP (attention and LayerNorm scale held constant, GELU identity rule): input relevance summed "
                   "over channels; input relevance + the biases' and embeddings' share = the class logit")

    def map(self, model: LoadedModel, inputs: ModelInput, target: int) -> RelevanceMap:
        from .lrp import lrp_relevance

        x = inputs.x[None].to(model.device)
        result = lrp_relevance(model.module, x, [int(target)], family=model.family)
        values = result.relevance.sum(dim=1).double().cpu().numpy()[0]
        meta = {"resolution": self.resolution, "logit": float(result.logits[0]),
                "input_relevance": float(result.relevance[0].double().sum()),
                "source_relevance": float(result.source_relevance[0]), "residual": float(result.residual[0])}
        return RelevanceMap(values, meta)

    def passes(self, module, batch, x):
        """One input gradient through the explicit attention path (CP-LRP holds the probabilities constant,
        so they must exist as tensors; timm's fused kernel never forms them)."""
        return [(1, 1, "input-gradient-explicit-attention")]

