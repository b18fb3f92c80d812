"""Section: which explanation is faithful? Deletion/insertion AUC of every map, against random orders,
with the model-randomisation sanity check."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from ..cache import Record
from ..images import ImageItem
from ..loaded_model import LoadedModel
from ..settings import BatchSize, Float, Int, SectionSettings
from ..relevance import map_specs, with_module
from .base import ModelInput, Section

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure


Baseline = Literal["mean", "blur", "zero"]


class FaithfulnessSettings(SectionSettings):
    """Deletion/insertion scores of every registered relevance map, a random baseline, and the randomisation
    sanity check."""

    #: Cells per side of the grid that deletion and insertion work on (maps are area-resampled to it).
    grid: Int = Field(default=14, ge=2)
    #: Cells removed or revealed per step.
    step: Int = Field(default=4, ge=1)
    deletion_baseline: Baseline = "mean"
    insertion_baseline: Baseline = "blur"
    blur_sigma: Float = Field(default=5.0, gt=0)
    #: Images per forward pass along the curves; "auto" as in [sections.lime].
    batch_size: BatchSize = "auto"
    random_seeds: tuple[Int, ...] = Field(default=(0, 1, 2), min_length=1)
    #: Blocks re-initialised (from the top) for the sanity check, besides the classifier head.
    randomise_blocks: Int = Field(default=2, ge=0)
    #: A method whose map keeps a rank correlation at or above this (in absolute value) after
    #: randomisation is flagged.
    flag_correlation: Float = Field(default=0.5, gt=0, le=1)

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value):
        if value != "auto" and value < 1:
            raise ValueError(f"must be ≥ 1, got {value}")
        return value


class FaithfulnessSection(Section):
    Settings = FaithfulnessSettings
    name = "faithfulness"
    title = "Faithfulness: deletion and insertion"
    families = ("vit", "swin")
    template = "sections/faithfulness.md.j2"
    chapter = ("faithfulness", "Which explanation is faithful?", "chapters/faithfulness_intro.md.j2")

    # ------------------------------------------------------------------ compute

    def baseline(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        import torch
        from scipy.ndimage import gaussian_filter

        if kind == "mean":
            return x.mean(dim=(1, 2), keepdim=True).expand_as(x).clone()
        if kind == "zero":
            return torch.zeros_like(x)
        sigma = self.settings.blur_sigma
        return torch.from_numpy(np.stack([gaussian_filter(c, sigma) for c in x.cpu().numpy()])).to(x)

    def params(self) -> dict:
        # the maps it scores: every enabled method's parameters (a changed method re-scores)
        specs = map_specs(self.config)
        return {**super().params(), "maps": {spec.id: spec.method.params() for spec in specs}}

    def applies_to(self, model: LoadedModel) -> bool:
        return super().applies_to(model) and bool(map_specs(self.config, model))

    def compute(self, model: LoadedModel, image: ImageItem, inputs: ModelInput) -> Record:
        import torch

        from ..metrics import auc, cell_relevance, perturbation_curve, random_baseline, randomise_top, rank_correlation

        s = self.settings
        module = model.module
        x = inputs.x.to(model.device)

        def predict(batch: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return module(batch).float().softmax(-1)

        target = int(predict(x[None]).argmax())
        specs = map_specs(self.config, model)
        store = self.relevance_store()
        maps = {spec.title: store.get(spec, model, image, inputs, target).values for spec in specs}
        randomised = with_module(model, randomise_top(module, blocks=s.randomise_blocks, seed=0))
        how = f"top {s.randomise_blocks} blocks and head re-initialised, seed 0"
        random_maps = {spec.title: store.get(spec, randomised, image, inputs, target, randomised=how).values
                       for spec in specs}
        grid = (s.grid, s.grid)
        batch = model.batch_size(s.batch_size)
        deletion_base, insertion_base = self.baseline(x, s.deletion_baseline), self.baseline(x, s.insertion_baseline)
        rows, curves, cells = [], [], []
        for name, relevance in maps.items():
            rel = cell_relevance(relevance, grid)
            fd, pd_ = perturbation_curve(predict, x, deletion_base, rel, target, "deletion", s.step, batch)
            fi, pi = perturbation_curve(predict, x, insertion_base, rel, target, "insertion", s.step, batch)
            rho = rank_correlation(rel, cell_relevance(random_maps[name], grid))
            rows.append({"method": name, "deletion_auc": round(auc(fd, pd_), 6), "insertion_auc": round(auc(fi, pi), 6),
                         "randomisation_correlation": round(rho, 6), "flagged": bool(abs(rho) >= s.flag_correlation)})
            curves.append(np.stack([pd_, pi]))
            cells.append(rel)
        random = {"deletion": random_baseline(predict, x, deletion_base, grid, target, list(s.random_seeds), s.step,
                                              batch)["deletion"],
                  "insertion": random_baseline(predict, x, insertion_base, grid, target, list(s.random_seeds), s.step,
                                               batch)["insertion"]}
        return Record(
            section=self.name, model=model.name, image=image.slug,
            arrays={"curves": np.stack(curves).astype(np.float32), "fractions": fd.astype(np.float32),
                    "cells": np.stack(cells).astype(np.float32)},
            meta={"model_display": model.display_name, "random_weights": model.random_weights,
                  "target": model.class_names[target], "methods": list(maps), "rows": rows, "random": random,
                  "grid": list(grid), "step": s.step, "deletion_baseline": s.deletion_baseline,
                  "insertion_baseline": s.insertion_baseline, "randomise_blocks": s.randomise_blocks,
                  "flag_correlation": s.flag_correlation},
        )

    def render(self, record: Record) -> dict[str, Figure]:
        from ..render.metrics import curves_figure

        m, a = record.meta, record.arrays
        return {"": curves_figure(a["fractions"], a["curves"], m["methods"], m["random"],
                                  f"{m['model_display']}: deletion and insertion for {m['target']}")}

    def caption(self, record: Record, figure_id: str = "") -> str:
        m = record.meta
        return (f"{m['model_display']}: probability of {m['target']} as {m['grid'][0]}×{m['grid'][1]} cells are removed "
                f"(deletion, onto a {m['deletion_baseline']} image; lower area is better) or revealed (insertion, onto a "
                f"{m['insertion_baseline']} image; higher is better) in each map's order; dashed: random orders.")

    def tables(self, record: Record) -> dict[str, pd.DataFrame]:
        return {"": pd.DataFrame(record.meta["rows"])}

    def page_extras(self, results) -> dict:
        tables = {}
        for r in results:
            from ..render.text import fmt_column, fmt_number

            frame = pd.DataFrame(r.meta["rows"])
            for column in ("deletion_auc", "insertion_auc", "randomisation_correlation"):
                frame[column] = fmt_column(list(frame[column]))  # enough digits to tell the methods apart
            random = r.meta["random"]
            frame.loc[len(frame)] = {"method": "random order (mean ± sd)",
                                     "deletion_auc": f"{fmt_number(random['deletion']['mean'])} ± "
                                                     f"{fmt_number(random['deletion']['std'])}",
                                     "insertion_auc": f"{fmt_number(random['insertion']['mean'])} ± "
                                                      f"{fmt_number(random['insertion']['std'])}",
                                     "randomisation_correlation": "", "flagged": ""}
            frame["flagged"] = frame["flagged"].map({True: "yes: barely changes", False: "", "": ""})
            tables[r.model] = frame.rename(columns={"method": "Method", "deletion_auc": "Deletion AUC ↓",
                                                    "insertion_auc": "Insertion AUC ↑",
                                                    "randomisation_correlation": "Rank corr. after randomising",
                                                    "flagged": "Sanity flag"})
        return {"tables": tables}

    def chapter_extras(self, results) -> dict:
        """Per model: each method's mean over images, ranked by insertion − deletion."""
        rows = []
        for r in results:
            for row in r.meta["rows"]:
                rows.append({"model": r.meta["model_display"], **row,
                             "random_deletion": r.meta["random"]["deletion"]["mean"],
                             "random_insertion": r.meta["random"]["insertion"]["mean"]})
        if not rows:
            return {}
        frame = pd.DataFrame(rows)
        summary = {}
        for model, group in frame.groupby("model", sort=False):
            mean = group.groupby("method", sort=False).agg(
                images=("deletion_auc", "size"), deletion=("deletion_auc", "mean"), insertion=("insertion_auc", "mean"),
                correlation=("randomisation_correlation", "mean"), flagged=("flagged", "sum"),
                random_deletion=("random_deletion", "mean"), random_insertion=("random_insertion", "mean"))
            mean["score"] = mean["insertion"] - mean["deletion"]
            mean = mean.sort_values("score", ascending=False).reset_index()
            mean.insert(0, "rank", range(1, len(mean) + 1))
            from ..render.text import fmt_column

            for column in ("deletion", "insertion", "correlation", "random_deletion", "random_insertion", "score"):
                mean[column] = fmt_column(list(mean[column]))  # enough digits to separate what is ranked; no "-0"
            summary[model] = mean.rename(columns={
                "rank": "Rank", "method": "Method", "images": "Images", "deletion": "Deletion AUC ↓",
                "insertion": "Insertion AUC ↑", "score": "Insertion − deletion", "correlation": "Rank corr. after randomising",
                "flagged": "Images flagged", "random_deletion": "Random deletion", "random_insertion": "Random insertion"})
        return {"summary": summary}
