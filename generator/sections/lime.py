"""Section: LIME regions for every model, and how much the models agree (IoU of top-1 regions)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Annotated, Literal, Union

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import Field, Strict, model_validator
from pydantic_core import PydanticCustomError

from ..store.cache import Record
from ..data.images import ImageItem
from ..models.loaded import LoadedModel
from ..analysis.regions import region_iou
from ..relevance.segmentations import segmentation_problem
from ..config.settings import BatchSize, Bool, Float, Int, SectionSettings, Str
from .base import ModelInput, Section

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class LimeSettings(SectionSettings):
    """LIME region explanations (the study's Figure 5), every model. Defaults follow lime's own."""

    num_samples: Int = Field(default=1000, ge=2)
    top_labels: Int = Field(default=2, ge=1)
    num_features: Int = Field(default=5, ge=1)
    #: Images per forward pass of the classifier function; "auto" picks by the model's FLOPs and device (see README).
    batch_size: BatchSize = "auto"
    segmentation: Literal["quickshift", "slic", "felzenszwalb"] = "quickshift"
    #: Parameters over lime's defaults for the chosen segmentation (quickshift: kernel_size 4, max_dist 200, ratio 0.2).
    segmentation_params: dict[Str, Union[Int, Float]] = {}
    #: "mean" hides each superpixel with its mean colour (lime's default), or an [r, g, b] colour.
    hide_color: Union[Literal["mean"], Annotated[tuple[Annotated[int, Strict(), Field(ge=0, le=255)], ...],
                                                 Field(min_length=3, max_length=3)]] = "mean"
    seed: Int = 0
    show_negative: Bool = False
    show_heatmap: Bool = True

    @model_validator(mode="after")
    def _segmentation_params_fit(self) -> "LimeSettings":
        for name, value in self.segmentation_params.items():
            problem = segmentation_problem(self.segmentation, name, value)
            if problem:
                raise PydanticCustomError("segmentation_param", "{key}: {problem}",
                                          {"key": f"segmentation_params.{name}", "problem": problem})
        return self


class LimeSection(Section):
    Settings = LimeSettings
    name = "lime"
    title = "LIME: which regions decide"
    template = "sections/lime.md.j2"
    chapter = ("lime", "LIME", "chapters/lime_intro.md.j2")
    summary_arrays = ("support_0",)

    def compute(self, model: LoadedModel, image: ImageItem, inputs: ModelInput) -> Record:
        from ..relevance.lime import explain_image, region_mask, weight_map

        s = self.settings
        explanation = explain_image(
            model.module, inputs.view, num_samples=s.num_samples, top_labels=min(s.top_labels, len(model.class_names)),
            num_features=s.num_features, seed=s.seed, batch_size=model.batch_size(s.batch_size),
            hide_color=None if s.hide_color == "mean" else tuple(s.hide_color),
            segmentation=s.segmentation, segmentation_params=dict(s.segmentation_params))
        probs = explanation_probs(explanation, model, inputs)
        arrays = {"view": inputs.view, "segments": explanation.segments.astype(np.int32)}
        labels = []
        for rank, label in enumerate(explanation.top_labels):
            arrays[f"support_{rank}"] = region_mask(explanation, label, s.num_features, positive=True)
            arrays[f"oppose_{rank}"] = region_mask(explanation, label, s.num_features, positive=False)
            arrays[f"weights_{rank}"] = weight_map(explanation, label).astype(np.float32)
            labels.append({"index": int(label), "label": model.class_names[int(label)], "prob": round(float(probs[label]), 6),
                           "intercept": round(float(explanation.intercept[label]), 6)})
        segments = int(len(np.unique(explanation.segments)))
        meta = {"model_display": model.display_name, "random_weights": model.random_weights,
                "top": [{"index": l["index"], "label": l["label"], "prob": l["prob"]} for l in labels],
                "labels": labels, "segments": segments, "degenerate": segments < 2,
                "score": round(float(explanation.score), 6), "num_samples": s.num_samples,
                "num_features": s.num_features, "segmentation": s.segmentation,
                "segmentation_params": dict(s.segmentation_params), "hide_color": s.hide_color,
                "show_negative": s.show_negative, "show_heatmap": s.show_heatmap}
        return Record(section=self.name, model=model.name, image=image.slug, arrays=arrays, meta=meta)

    def render(self, record: Record) -> dict[str, Figure]:
        from ..render.lime import lime_figure
        from ..render.text import fmt_pct, short_class_name

        m, a = record.meta, record.arrays
        panels, heatmaps = [], []
        for rank, label in enumerate(m["labels"]):
            short = short_class_name(label["label"])  # titles are tight; the caption has the full name
            name = f"{short} ({fmt_pct(label['prob'])})"
            panels.append({"mask": a[f"support_{rank}"], "title": f"for {name}", "support": True,
                           "empty": f"no region supports {short}"})
            if m["show_negative"]:
                panels.append({"mask": a[f"oppose_{rank}"], "title": f"against {name}", "support": False,
                               "empty": f"no region opposes {short}"})
            if m["show_heatmap"]:
                heatmaps.append({"weights": a[f"weights_{rank}"], "title": f"weights: {short}"})
        suffix = " (one segment: degenerate)" if m["degenerate"] else ""
        return {"": lime_figure(a["view"], panels, f"{m['model_display']}: LIME regions{suffix}", heatmaps,
                                segments=a["segments"])}

    def caption(self, record: Record, figure_id: str = "") -> str:
        from ..render.text import fmt_pct, plural

        m = record.meta
        names = "; ".join(f"#{i + 1} {l['label']} at {fmt_pct(l['prob'])}" for i, l in enumerate(m["labels"]))
        empty = [l["label"] for rank, l in enumerate(m["labels"])
                 if f"support_{rank}" in record.arrays and not record.arrays[f"support_{rank}"].any()]
        none = (f" No superpixel has a positive weight for {' or '.join(empty)}, so its panel is empty."
                if empty else "")
        degenerate = " The segmentation found a single superpixel, so this explanation is degenerate." if m["degenerate"] else ""
        return (f"{m['model_display']}: for each top class, up to {plural(m['num_features'], 'superpixel')} with the "
                f"largest positive LIME weights (green tint and outline{', red: against the class' if m['show_negative'] else ''}; "
                f"{names}), from {m['num_samples']} perturbed samples over "
                f"{plural(m['segments'], m['segmentation'] + ' superpixel')}.{none}{degenerate}")

    def page_extras(self, results) -> dict:
        """IoU of the top-1 supporting regions between every pair of models on this image."""
        masks = {r.model: r.arrays["support_0"] for r in results if "support_0" in r.arrays}
        if len(masks) < 2:
            return {}
        size = max(m.shape for m in masks.values())
        resized = {k: np.array(Image.fromarray(v.astype(np.uint8) * 255).resize(size[::-1], Image.Resampling.NEAREST)) > 127
                   for k, v in masks.items()}
        rows = [{"Model A": a, "Model B": b, "IoU of top-1 regions": f"{region_iou(resized[a], resized[b]):.2f}"}
                for a, b in itertools.combinations(masks, 2)]
        return {"iou_table": pd.DataFrame(rows)}


def explanation_probs(explanation, model: LoadedModel, inputs: ModelInput) -> np.ndarray:
    """The unperturbed image's class probabilities, as LIME saw them (sample 0 keeps every superpixel)."""
    from ..relevance.lime import predict_fn

    return predict_fn(model.module, 1)(inputs.view[None])[0]


# ------------------------------------------------------------------ relevance map owned by this section
