"""Section: every registered relevance map of a model for its predicted class, side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from ..store.cache import Record
from ..data.images import ImageItem
from ..models.loaded import LoadedModel
from ..relevance.registry import map_specs
from ..config.settings import SectionSettings
from .base import ModelInput, Section
from .common import ComparesMaps, prediction_meta

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class MapsSettings(SectionSettings):
    """The grid of relevance maps on each image page."""

    #: "map": each map scaled to its own largest magnitude; "shared": each map normalised to unit
    #: total |relevance| over the image, all drawn on one colour scale (comparable concentration).
    scale: Literal["map", "shared"] = "map"


class MapsSection(ComparesMaps, Section):
    """One grid per model and image: each enabled relevance method's map (:mod:`generator.relevance.registry`)."""

    name = "maps"
    title = "Relevance maps, side by side"
    template = "sections/maps.md.j2"
    chapter = ("relevance-maps", "Relevance maps", "chapters/maps_intro.md.j2")
    Settings = MapsSettings
    version = 2  # 2: records name the enabled methods left out for the model

    def compute(self, model: LoadedModel, image: ImageItem, inputs: ModelInput) -> Record:
        import torch

        with torch.inference_mode():
            logits = model.module(inputs.x[None].to(model.device))[0]
        target = int(logits.argmax())
        store = self.relevance_store()
        arrays: dict[str, np.ndarray] = {"view": inputs.view}
        methods = []
        for i, spec in enumerate(map_specs(self.config, model)):
            relevance = store.get(spec, model, image, inputs, target)
            arrays[f"map_{i}"] = relevance.values.astype(np.float32)
            methods.append({"id": spec.id, "title": spec.title, "description": spec.method.description,
                            "shape": list(relevance.values.shape)})
        meta = {**prediction_meta(model, logits), "target": model.class_names[target], "methods": methods,
                "scale": self.settings.scale, "left_out": left_out_methods(self.config, model)}
        return Record(section=self.name, model=model.name, image=image.slug, arrays=arrays, meta=meta)

    def render(self, record: Record) -> dict[str, Figure]:
        from ..render.maps import maps_figure

        m, a = record.meta, record.arrays
        maps = [a[f"map_{i}"] for i in range(len(m["methods"]))]
        return {"": maps_figure(a["view"], maps, [x["title"] for x in m["methods"]], m["scale"],
                                f"{m['model_display']}: where each method looks for {m['target']}")}

    def page_extras(self, results) -> dict:
        """Sanity-check warnings for each model's maps, from the faithfulness results of the same image
        (set beside the grid wherever it appears)."""
        from ..analysis.caveats import sanity_caveats

        return {"sanity": sanity_caveats(self.build, results)}

    def chapter_extras(self, results) -> dict:
        seen = {}
        for r in results:
            for m in r.meta["methods"]:
                seen.setdefault(m["id"], {"title": m["title"], "description": m["description"]})
        return {"methods": list(seen.values())} if seen else {}

    def caption(self, record: Record, figure_id: str = "") -> str:
        m = record.meta
        scale = ("each map scaled to its largest magnitude" if m["scale"] == "map" else
                 "each map normalised to unit total relevance, one colour scale for all")
        groups: dict[str, list[str]] = {}
        for x in m.get("left_out", []):
            groups.setdefault(x["lacks"], []).append(x["title"])
        left_out = ("; ".join(f"{', '.join(titles)} (it lacks {lacks})" for lacks, titles in groups.items()))
        left_out = f" Left out for this model: {left_out}." if left_out else ""
        return (f"{m['model_display']}: {len(m['methods'])} relevance maps for the predicted class {m['target']} "
                f"({', '.join(x['title'] for x in m['methods'])}); {scale}.{left_out}")


def left_out_methods(config, model: LoadedModel) -> list[dict]:
    """Enabled methods that do not apply to ``model`` (LRP on a model whose modules its rules do not cover …),
    each with what the model lacks, in words."""
    from ..families import CAPABILITIES
    from ..relevance.registry import registered_methods

    out = []
    for cls in registered_methods():
        for variant in cls.variants(config):
            method = cls(config, variant)
            if method.enabled() and not method.applies_to(model):
                lacks = "; ".join(CAPABILITIES.get(need, need) for need in model.missing(method.needs))
                out.append({"title": method.title, "lacks": lacks})
    return out
