"""Small helpers shared by sections."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..models.loaded import LoadedModel
from ..relevance.registry import map_specs

if TYPE_CHECKING:
    import torch

    from ..attention.capture import TokenLayout


def prediction_meta(model: LoadedModel, logits: torch.Tensor, k: int = 5) -> dict:
    """The model's top-k prediction for one image, as JSON-able metadata (``top`` is empty for a
    headless backbone: its output is features, not classes).

    Args:
        logits: (classes,) for one image.
    """
    import torch

    if not model.has("classifier-head"):
        return {"model_display": model.display_name, "random_weights": model.random_weights, "top": []}
    probs = logits.float().softmax(-1).cpu()
    top = torch.topk(probs, min(k, probs.numel()))
    return {
        "model_display": model.display_name,
        "random_weights": model.random_weights,
        "top": [
            {"index": int(i), "label": model.class_names[int(i)], "prob": round(float(p), 6)}
            for p, i in zip(top.values, top.indices)
        ],
    }


def resolve_query(query: str | int, layout: TokenLayout) -> str | int:
    """The query a model's figures use: ``"auto"`` is the class token where the model has one, else
    the mean over the patch queries; any other value is kept."""
    if query == "auto":
        return "cls" if layout.has_class_token else "mean"
    return query


class ComparesMaps:
    """Mixin for sections that read every enabled relevance map (the maps grid, faithfulness): the maps'
    parameters are part of the cache key (a changed method recomputes), and a model that no enabled
    method applies to is skipped with that reason."""

    def params(self) -> dict:
        specs = map_specs(self.config)
        return {**super().params(), "maps": {spec.id: spec.method.params() for spec in specs}}

    def missing(self, model: LoadedModel) -> list[str]:
        return super().missing(model) or ([] if map_specs(self.config, model) else ["an enabled relevance method"])
