"""LIME as a relevance map: its superpixel weights for the target class, painted on the pixels.

Segmentation, features, seed and hide colour follow ``[sections.lime]``, so the map and the LIME
section's figure agree; only the sample count may differ (``[methods.lime] num_samples``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field, Strict

from .registry import MethodSettings, RelevanceMap, RelevanceMethod, register_method

if TYPE_CHECKING:
    from ..data.inputs import ModelInput
    from ..models.loaded import LoadedModel

__all__ = ["LimeMethod", "LimeMethodSettings"]


class LimeMethodSettings(MethodSettings):
    """LIME as a relevance map: its own sample count (unset: as [sections.lime]); the rest follows [sections.lime]."""

    num_samples: Annotated[int, Strict(), Field(ge=2)] | None = None


@register_method
class LimeMethod(RelevanceMethod):
    """LIME's superpixel weights for the target class, painted on the pixels."""

    name = "lime"
    label = "LIME"
    Settings = LimeMethodSettings
    description = "LIME's weight of each superpixel for the class (segmentation as in the LIME section)"

    @property
    def num_samples(self) -> int:
        return self.settings.num_samples or self.config.sections.lime.num_samples

    def params(self) -> dict:
        lime = self.config.sections.lime
        return {**super().params(), "num_samples": self.num_samples, "num_features": lime.num_features, "seed": lime.seed,
                "hide_color": lime.hide_color, "segmentation": lime.segmentation,
                "segmentation_params": dict(lime.segmentation_params)}

    def map(self, model: LoadedModel, inputs: ModelInput, target: int) -> RelevanceMap:
        from .lime import explain_image, weight_map

        lime = self.config.sections.lime
        explanation = explain_image(model.module, inputs.view, num_samples=self.num_samples,
                                    num_features=lime.num_features, seed=lime.seed,
                                    batch_size=model.batch_size(lime.batch_size),
                                    hide_color=None if lime.hide_color == "mean" else tuple(lime.hide_color),
                                    segmentation=lime.segmentation, segmentation_params=dict(lime.segmentation_params),
                                    labels=(target,))
        return RelevanceMap(weight_map(explanation, target))
