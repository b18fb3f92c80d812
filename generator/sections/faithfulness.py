"""Section: which explanation is faithful? Deletion/insertion AUC of every map, against random orders,
with the model-randomisation sanity check."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..cache import Record
from ..images import ImageItem
from ..loaded_model import LoadedModel
from .base import ModelInput, Section

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure


class FaithfulnessSection(Section):
    name = "faithfulness"
    title = "Faithfulness: deletion and insertion"
    families = ("vit", "swin")
    template = "sections/faithfulness.md.j2"
    chapter = ("faithfulness", "Which explanation is faithful?", "chapters/faithfulness_intro.md.j2")

    # ------------------------------------------------------------------ maps

    def maps(self, module: torch.nn.Module, family: str, inputs: ModelInput, target: int,
             lime_batch: int) -> dict[str, np.ndarray]:
        """Every map the gallery makes for this model, for class ``target``: name → 2-D relevance."""
        import torch

        from ..attention import vit_attention, vit_attention_gradients, vit_token_layout
        from ..lime_explain import explain_image, weight_map
        from ..rollout import attention_rollout, gradient_rollout, rollout_mask
        from ..swin import full_attention_from_windows, swin_rollout, window_attention

        x = inputs.x[None].to(next(module.parameters()).device)
        out: dict[str, np.ndarray] = {}
        rollout = self.config.sections.rollout
        if family == "vit":
            layout = vit_token_layout(module)
            cls, prefix = layout.prefix_names.index("CLS"), layout.num_prefix_tokens
            with torch.inference_mode():
                _, attn = vit_attention(module, x)
            attn = attn.double()
            for fusion in rollout.fusions:
                r = attention_rollout(attn, head_fusion=fusion, discard_ratio=rollout.discard_ratios[0],
                                      start_block=rollout.start_block, normalize=rollout.normalize, keep_index=cls)
                out[f"rollout ({fusion})"] = rollout_mask(r, layout.grid, prefix, query=cls)[0].numpy()
            _, used, grads = vit_attention_gradients(module, x, torch.tensor([target]))
            weighted = gradient_rollout(used.double(), grads.double(), start_block=rollout.gradient_start_block)
            out["gradient rollout"] = rollout_mask(weighted, layout.grid, prefix, query=cls)[0].numpy()
            out["last-block CLS attention"] = attn[-1, 0, :, cls, prefix:].mean(0).reshape(layout.grid).numpy()
        else:
            swin = self.config.sections.swin
            with torch.inference_mode():
                _, attention, geometry = window_attention(module, x)
            relevance, _ = swin_rollout(attention, geometry, head_fusion=swin.rollout_fusion,
                                        discard_ratio=swin.rollout_discard_ratio, normalize=swin.rollout_normalize)
            out["Swin rollout"] = relevance[0].numpy()
            last = max(attention)
            full = full_attention_from_windows(attention[last].double(), geometry[last])  # 1, heads, N, N
            out["last-stage window attention"] = full[0].mean(0).mean(0).reshape(geometry[last].grid).numpy()
        lime = self.config.sections.lime
        explanation = explain_image(module, inputs.view, num_samples=self.settings.lime_samples,
                                    num_features=lime.num_features, seed=lime.seed, batch_size=lime_batch,
                                    hide_color=None if lime.hide_color == "mean" else tuple(lime.hide_color),
                                    segmentation=lime.segmentation, segmentation_params=dict(lime.segmentation_params),
                                    labels=(target,))
        out["LIME"] = weight_map(explanation, target)
        return out

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

        from ..metrics import auc, cell_relevance, perturbation_curve, random_baseline, randomise_top, rank_correlation

        s = self.settings
        module = model.module
        x = inputs.x.to(model.device)

        def predict(batch: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return module(batch).float().softmax(-1)

        target = int(predict(x[None]).argmax())
        lime_batch = model.batch_size(self.config.sections.lime.batch_size)
        maps = self.maps(module, model.family, inputs, target, lime_batch)
        randomised = randomise_top(module, blocks=s.randomise_blocks, seed=0)
        random_maps = self.maps(randomised, model.family, inputs, target, lime_batch)
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
                         "randomisation_correlation": round(rho, 6), "flagged": bool(rho >= s.flag_correlation)})
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
