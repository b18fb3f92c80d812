"""Section: which explanation is faithful? Every registered relevance map of a model, scored on every
image by deletion/insertion AUC (against random orders) and by ROAD, with the model-randomisation
sanity check; the chapter compares them over the whole image set (bootstrap intervals, how often each
method ranks first)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field, Strict

from ..store.cache import Record
from ..data.images import ImageItem
from ..models.loaded import LoadedModel
from ..config.settings import BatchSize, Bool, Float, Int, SectionSettings
from ..relevance.registry import map_specs, with_module
from .base import ModelInput, Section
from .common import ComparesMaps

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
    #: A method whose map keeps a rank correlation at or above this (in absolute value: two-sided) after
    #: randomisation is flagged.
    flag_correlation: Float = Field(default=0.5, gt=0, le=1)
    #: ROAD (remove and debias, pytorch-grad-cam's metric) as a second measure; its percentile thresholds
    #: (p: the pixels at or above the map's p-th percentile are imputed, MoRF; the reverse, LeRF).
    road: Bool = True
    road_percentiles: tuple[Annotated[int, Strict(), Field(ge=1, le=99)], ...] = Field(default=(20, 50, 80),
                                                                                       min_length=1)
    #: Seed of the ROAD imputer's noise (the same noise for every method).
    road_seed: Int = Field(default=0, ge=0)
    #: Bootstrap over images for the chapter's intervals: resamples, level, seed.
    bootstrap_samples: Int = Field(default=2000, ge=100, le=100_000)
    interval: Float = Field(default=0.95, gt=0.5, lt=1)
    bootstrap_seed: Int = Field(default=0, ge=0)



class FaithfulnessSection(ComparesMaps, Section):
    Settings = FaithfulnessSettings
    name = "faithfulness"
    title = "Faithfulness: deletion, insertion and ROAD"
    template = "sections/faithfulness.md.j2"
    chapter = ("faithfulness", "Which explanation is faithful?", "chapters/faithfulness_intro.md.j2")
    version = 3

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

    def compute(self, model: LoadedModel, image: ImageItem, inputs: ModelInput) -> Record:
        import torch

        from ..analysis.faithfulness import (auc, cell_order, cell_relevance, faithfulness_curves, pixel_order_map,
                                             randomise_top, rank_correlation, road_scores)

        s = self.settings
        module = model.module
        x = inputs.x.to(model.device)

        def predict(batch: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return module(batch).float().softmax(-1)

        target = int(predict(x[None]).argmax())
        specs = map_specs(self.config, model)
        store = self.relevance_store()
        maps = [store.get(spec, model, image, inputs, target) for spec in specs]
        randomised = with_module(model, randomise_top(module, blocks=s.randomise_blocks, seed=0))
        how = f"top {s.randomise_blocks} blocks and head re-initialised, seed 0"
        random_maps = [store.get(spec, randomised, image, inputs, target, randomised=how).values for spec in specs]
        grid = (s.grid, s.grid)
        batch = model.batch_size(s.batch_size)
        deletion_base, insertion_base = self.baseline(x, s.deletion_baseline), self.baseline(x, s.insertion_baseline)
        cells = [cell_relevance(m.values, grid) for m in maps]
        orders = [cell_order(c) for c in cells]
        orders += [np.random.default_rng(seed).permutation(grid[0] * grid[1]) for seed in s.random_seeds]
        curves = faithfulness_curves(predict, x, deletion_base, insertion_base, orders, grid, target, s.step, batch)
        f = curves.fractions
        deletion = [auc(f, p) for p in curves.deletion]
        insertion = [auc(f, p) for p in curves.insertion]
        n = len(specs)
        random = {mode: {"mean": float(np.mean(v[n:])), "std": float(np.std(v[n:]))}
                  for mode, v in (("deletion", deletion), ("insertion", insertion))}
        road = None
        if s.road:
            road = road_scores(predict, x, [pixel_order_map(m.values, tuple(x.shape[-2:])) for m in maps], target,
                               s.road_percentiles, s.road_seed, batch, base_prob=float(curves.deletion[0, 0]))
        rows, notes = [], []
        for i, (spec, relevance) in enumerate(zip(specs, maps)):
            rho = rank_correlation(cells[i], cell_relevance(random_maps[i], grid))
            row = {"method": spec.title, "id": spec.id, "deletion_auc": deletion[i], "insertion_auc": insertion[i],
                   "score": insertion[i] - deletion[i], "randomisation_correlation": rho,
                   "flagged": bool(abs(rho) >= s.flag_correlation)}
            if road is not None:
                row.update(road=float(road["combined"][i]), road_morf=float(road["morf"][i].mean()),
                           road_lerf=float(road["lerf"][i].mean()))
            rows.append(row)
            if "source_relevance" in relevance.meta:  # LRP's conservation terms
                meta = relevance.meta
                notes.append({"method": spec.title, "logit": meta["logit"], "input": meta["input_relevance"],
                              "sources": meta["source_relevance"], "residual": meta["residual"]})
        arrays = {"curves": np.stack([curves.deletion[:n], curves.insertion[:n]], axis=1).astype(np.float32),
                  "fractions": f.astype(np.float32), "cells": np.stack(cells).astype(np.float32)}
        if road is not None:
            arrays["road"] = np.stack([road["morf"], road["lerf"]], axis=1).astype(np.float32)
        return Record(
            section=self.name, model=model.name, image=image.slug, arrays=arrays,
            meta={"model_display": model.display_name, "random_weights": model.random_weights,
                  "target": model.class_names[target], "methods": [spec.title for spec in specs], "rows": rows,
                  "random": random, "notes": notes, "grid": list(grid), "step": s.step,
                  "deletion_baseline": s.deletion_baseline, "insertion_baseline": s.insertion_baseline,
                  "randomise_blocks": s.randomise_blocks, "flag_correlation": s.flag_correlation,
                  "road_percentiles": list(s.road_percentiles) if s.road else [], "road_seed": s.road_seed,
                  "forwards": curves.forwards + (road["forwards"] if road is not None else 0),
                  "interval": s.interval, "bootstrap_samples": s.bootstrap_samples,
                  "bootstrap_seed": s.bootstrap_seed},
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

    # ------------------------------------------------------------------ pages

    def page_extras(self, results) -> dict:
        """Per model on one image: every method's scores, in one number format."""
        from ..render.text import decimals_to_separate, format_number

        tables, notes = {}, {}
        for r in results:
            m = r.meta
            rows = m["rows"]
            road = bool(m.get("road_percentiles"))
            ranked = [row["score"] for row in rows] + ([row["road"] for row in rows] if road else [])
            d = decimals_to_separate(ranked + [row[k] for row in rows for k in ("deletion_auc", "insertion_auc")])
            out = []
            for row in rows:
                line = {"Method": row["method"], "Deletion AUC ↓": format_number(row["deletion_auc"], d),
                        "Insertion AUC ↑": format_number(row["insertion_auc"], d),
                        "Insertion − deletion ↑": format_number(row["score"], d)}
                if road:
                    line["ROAD ↑"] = format_number(row["road"], d)
                line["Rank corr. after randomising"] = format_number(row["randomisation_correlation"], d)
                line["Sanity flag"] = f"yes: |ρ| ≥ {format_number(m['flag_correlation'], 2)}" if row["flagged"] else ""
                out.append(line)
            random = m["random"]
            line = {"Method": "random order (mean ± sd)",
                    "Deletion AUC ↓": f"{format_number(random['deletion']['mean'], d)} ± "
                                      f"{format_number(random['deletion']['std'], d)}",
                    "Insertion AUC ↑": f"{format_number(random['insertion']['mean'], d)} ± "
                                       f"{format_number(random['insertion']['std'], d)}",
                    "Insertion − deletion ↑": format_number(random["insertion"]["mean"] - random["deletion"]["mean"], d)}
            if road:
                line["ROAD ↑"] = ""
            line.update({"Rank corr. after randomising": "", "Sanity flag": ""})
            out.append(line)
            tables[r.model] = pd.DataFrame(out)
            notes[r.model] = [lrp_note(n, d) for n in m.get("notes", [])]
        return {"tables": tables, "notes": notes}

    def chapter_extras(self, results) -> dict:
        """Per model: every method over every image: means with bootstrap intervals, rank-first counts, flags."""
        from ..analysis.bootstrap import bootstrap_intervals, rank_first_counts
        from ..render.text import decimals_to_separate, format_number

        by_model: dict[str, list] = {}
        for r in results:
            by_model.setdefault(r.meta["model_display"], []).append(r)
        if not by_model:
            return {}
        first = results[0].meta
        road = bool(first.get("road_percentiles"))
        stats = {}
        for model, group in by_model.items():
            methods = list(dict.fromkeys(row["method"] for r in group for row in r.meta["rows"]))
            usable = [r for r in group if [row["method"] for row in r.meta["rows"]] == methods]
            if not usable:
                continue

            def matrix(key):
                return np.array([[row[key] for row in r.meta["rows"]] for r in usable], dtype=np.float64)

            measures = {"deletion": matrix("deletion_auc"), "insertion": matrix("insertion_auc"),
                        "score": matrix("score"), "correlation": matrix("randomisation_correlation")}
            if road:
                measures["road"] = matrix("road")
            flagged = np.array([[row["flagged"] for row in r.meta["rows"]] for r in usable], dtype=bool)
            random = {mode: np.array([r.meta["random"][mode]["mean"] for r in usable]) for mode in ("deletion",
                                                                                                  "insertion")}
            random["score"] = random["insertion"] - random["deletion"]
            seed, samples, level = first["bootstrap_seed"], first["bootstrap_samples"], first["interval"]
            intervals = {k: bootstrap_intervals(v, level, samples, seed) for k, v in measures.items()}
            random_intervals = {k: bootstrap_intervals(v[:, None], level, samples, seed) for k, v in random.items()}
            stats[model] = dict(methods=methods, measures=measures, flagged=flagged, intervals=intervals,
                                random=random, random_intervals=random_intervals, images=len(usable),
                                first_score=rank_first_counts(measures["score"]),
                                first_road=rank_first_counts(measures["road"]) if road else None)
        ranked = [v for st in stats.values() for k in ("score", "road") if k in st["measures"]
                  for v in st["measures"][k].mean(axis=0)]
        d = decimals_to_separate(ranked + [v for st in stats.values() for k in ("deletion", "insertion")
                                           for v in st["measures"][k].mean(axis=0)])

        def with_interval(mean, low, high):
            return f"{format_number(mean, d)} [{format_number(low, d)}, {format_number(high, d)}]"

        summary = {}
        for model, st in stats.items():
            means = {k: v.mean(axis=0) for k, v in st["measures"].items()}
            order = np.argsort(-means["score"], kind="stable")
            n = st["images"]
            rows = []
            for rank, j in enumerate(order, start=1):
                flags = int(st["flagged"][:, j].sum())
                name = st["methods"][j] + (f" ⚠ sanity flag on {flags}/{n}" if flags else "")
                row = {"Rank": str(rank), "Method": name}
                for key, label in (("deletion", "Deletion AUC ↓"), ("insertion", "Insertion AUC ↑"),
                                   ("score", "Insertion − deletion ↑")):
                    low, high = st["intervals"][key]
                    row[label] = with_interval(means[key][j], low[j], high[j])
                row["First (ins − del)"] = f"{st['first_score'][j]}/{n}"
                if road:
                    low, high = st["intervals"]["road"]
                    row["ROAD ↑"] = with_interval(means["road"][j], low[j], high[j])
                    row["First (ROAD)"] = f"{st['first_road'][j]}/{n}"
                row["Mean rank corr. after randomising"] = format_number(means["correlation"][j], d)
                rows.append(row)
            row = {"Rank": "", "Method": "random order"}
            for key, label in (("deletion", "Deletion AUC ↓"), ("insertion", "Insertion AUC ↑"),
                               ("score", "Insertion − deletion ↑")):
                low, high = st["random_intervals"][key]
                row[label] = with_interval(st["random"][key].mean(), low[0], high[0])
            row["First (ins − del)"] = ""
            if road:
                row.update({"ROAD ↑": "", "First (ROAD)": ""})
            row["Mean rank corr. after randomising"] = ""
            rows.append(row)
            summary[model] = pd.DataFrame(rows)
        return {"summary": summary, "flag_correlation": format_number(first["flag_correlation"], 2),
                "road_percentiles": first.get("road_percentiles", []), "interval": f"{first['interval']:.0%}",
                "bootstrap_samples": first["bootstrap_samples"], "bootstrap_seed": first["bootstrap_seed"],
                "decimals": d}


def lrp_note(note: dict, decimals: int) -> str:
    """LRP's conservation on one image, in words: input relevance + sources' share = logit."""
    from ..render.text import format_number

    share = note["sources"] / note["logit"] if note["logit"] else float("nan")
    return (f"{note['method']}: input relevance {format_number(note['input'], decimals)} + biases' and embeddings' "
            f"share {format_number(note['sources'], decimals)} = class logit {format_number(note['logit'], decimals)} "
            f"(the share is {format_number(100 * share, 1)} % of the logit; conservation residual "
            f"{note['residual']:.1e})")
