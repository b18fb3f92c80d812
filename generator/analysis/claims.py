"""The study's claims, tested: gathers each claim's numbers from the build's results and asks
:mod:`generator.analysis.findings` for a verdict per configured model.

Nothing is recomputed here: the attention claims read the statistics section's records (whose
findings and per-image numbers were made when they were computed); fusion reads the
faithfulness section's deletion and insertion AUCs of "rollout (mean)" and "rollout (max)";
LIME agreement reads the LIME section's IoU of the models' top regions (its page extras); the
placement and size claims read the perturbation section's tables and the variants' declared
edits. Intervals are the same seeded percentile bootstrap over images as the statistics'.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict
from typing import Any

import numpy as np

from .bootstrap import bootstrap_interval
from .caveats import perturb_caveats
from .findings import Finding, edit_effect, lime_models_agree, mean_fusion_best, not_testable, study_claims
from ..pipeline.results import JobResult, RunResult

__all__ = ["claims_context"]

#: Bootstrap of the claim numbers (the statistics section's own settings, when it ran, are used instead).
N_BOOT, SEED, CONFIDENCE = 2000, 0, 0.95

_VIT = ("vit_spatial_then_content", "vit_growing_sparsity", "vit_later_blocks_alike", "vit_late_sparse_rows",
        "vit_early_columns")
_SWIN = ("swin_head_shapes", "swin_position_bias")


def _interval(values, digits: int = 3, unit: str = "") -> dict:
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return {"text": "n/a", "n": 0}
    iv = bootstrap_interval(values, n_boot=N_BOOT, seed=SEED, confidence=CONFIDENCE)
    return {"mean": float(iv.mean), "low": float(iv.low), "high": float(iv.high), "n": int(values.size),
            "text": _fmt(float(iv.mean), float(iv.low), float(iv.high), int(values.size), digits, unit)}


def _fmt(mean, low, high, n, digits=3, unit="") -> str:
    if mean is None:
        return "n/a"
    text = f"{mean:.{digits}f}{unit}"
    if low is not None and high is not None and n > 1:
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text + f" ({n} image{'s' if n != 1 else ''})"


def _row(model: str, finding: Finding | dict, number: str, label: str = "") -> dict:
    f = asdict(finding) if isinstance(finding, Finding) else finding
    return {"model": model, "finding": f, "number": number, "label": label}


def _by_section(result: RunResult, section: str) -> list[JobResult]:
    order = {m.name: i for i, m in enumerate(result.models)}
    return sorted((r for r in result.results if r.section == section), key=lambda r: order.get(r.model, 0))


def _display(result: RunResult) -> dict[str, str]:
    return {m.name: m.display_name for m in result.models}


def _attention_rows(result: RunResult, claim_id: str) -> list[dict]:
    rows = []
    for r in _by_section(result, "stats"):  # a claim's finding is in the records of the models it is about
        finding = next((f for f in r.meta["findings"] if f["claim_id"] == claim_id), None)
        if finding is None:
            continue
        number = r.meta.get("claim_numbers", {}).get(claim_id)
        if number is None:
            text, label = "—", ""
        elif "count" in number:
            text = " / ".join(str(number["count"][k]) for k in ("vertical", "horizontal", "ring", "local", "mixed"))
            text += f" of {number['heads']} heads"
            label = number["label"]
        else:
            text, label = _fmt(number["mean"], number["low"], number["high"], r.meta["n_images"]), number["label"]
        rows.append(_row(r.meta["model_display"], finding, text, label))
    if not rows:
        why = "the statistics section is off" if not _enabled(result, "stats") else f"no {'VIT' if claim_id in _VIT else 'SWIN'} model is configured"
        rows.append(_row("—", not_testable(claim_id, why), "—"))
    return rows


def _enabled(result: RunResult, section: str) -> bool:
    return bool(getattr(result.config.sections, section).enabled)


def _fusion_rows(result: RunResult) -> list[dict]:
    cid = "rollout_mean_fusion"
    by_model: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    display = _display(result)
    for r in _by_section(result, "faithfulness"):
        aucs = {row["method"]: row for row in r.meta["rows"]}
        if "rollout (mean)" in aucs and "rollout (max)" in aucs:
            for metric in ("deletion_auc", "insertion_auc"):
                by_model[r.model][metric].append((aucs["rollout (mean)"][metric], aucs["rollout (max)"][metric]))
    rows = []
    for model, metrics in by_model.items():
        for metric, higher, name in (("deletion_auc", False, "deletion AUC"), ("insertion_auc", True, "insertion AUC")):
            pairs = np.asarray(metrics[metric], dtype=np.float64)
            finding = mean_fusion_best(float(pairs[:, 0].mean()), float(pairs[:, 1].mean()), higher_is_better=higher,
                                       metric=name)
            advantage = (pairs[:, 0] - pairs[:, 1]) if higher else (pairs[:, 1] - pairs[:, 0])
            rows.append(_row(display.get(model, model), finding, _interval(advantage)["text"],
                             f"advantage of mean over max fusion, {name}"))
    if not rows:
        why = ("the faithfulness section is off" if not _enabled(result, "faithfulness") else
               "no model has faithfulness scores of rollout with both mean and max fusion (ViT models with "
               "[sections.rollout] fusions including \"mean\" and \"max\")")
        rows.append(_row("—", not_testable(cid, why), "—"))
    return rows


def _lime_rows(result: RunResult) -> list[dict]:
    from ..sections.lime import LimeSection

    section = LimeSection(result.config)
    by_image: dict[str, list[JobResult]] = defaultdict(list)
    for r in _by_section(result, "lime"):
        by_image[r.image].append(r)
    per_pair: dict[str, list[float]] = defaultdict(list)
    per_image: list[float] = []
    for items in by_image.values():
        table = section.page_extras(items).get("iou_table")
        if table is None:
            continue
        values = []
        for _, row in table.iterrows():
            value = float(row["IoU of top-1 regions"])
            per_pair[f"{row['Model A']} – {row['Model B']}"].append(value)
            values.append(value)
        per_image.append(float(np.mean(values)))
    if not per_pair:
        why = "the LIME section is off" if not _enabled(result, "lime") else "LIME regions of two or more models are needed"
        return [_row("—", not_testable("lime_cross_model_agreement", why), "—")]
    finding = lime_models_agree({pair: float(np.mean(v)) for pair, v in per_pair.items()})
    return [_row("all model pairs", finding, _interval(per_image, 2)["text"], "mean IoU of the top-1 regions per image")]


def _edit_rows(result: RunResult, claim_id: str) -> tuple[list[dict], list[dict]]:
    """Placement or size claim rows, and the confound caveats (placement only)."""
    from .findings import edit_aspects, position_only_pair
    from ..sections.perturb import PerturbSection

    section = PerturbSection(result.config)
    images = {i.slug: i for i in result.images}
    rows, caveats = [], []
    for r in _by_section(result, "perturb"):
        image = images.get(r.image)
        if image is None:
            continue
        table = {row["Variant"]: row for row in r.meta["table"]}
        variants = {v.name: list(v.edits) for v in section.variants(image)}

        def probs(name: str) -> dict[str, float]:
            row = table[name]
            out = {row[f"{o} class"]: row[f"{o} %"] / 100.0 for o in ("1st", "2nd", "3rd") if f"{o} class" in row}
            out[r.meta["original_top1"]] = row["Original top-1 %"] / 100.0
            return out

        where = f"{r.meta['model_display']}, {image.name}"
        if claim_id == "size_effect":
            for name, edits in variants.items():
                if edit_aspects(edits) == {"size"} and name in table:
                    f = edit_effect(probs("Original"), probs(name), claim_id=claim_id, edit=f"shrinking the object (“{name}”)")
                    rows.append(_row(where, f, f"{f.numbers['drop']:+.1%} drop" if "drop" in f.numbers else "—",
                                     "fall of the original top class's probability"))
            continue
        names = list(variants)  # declaration order: the first of a pair is the reference
        pair = next(((a, b) for i, a in enumerate(names) for b in names[i + 1:]
                     if position_only_pair(variants[a], variants[b]) and a in table and b in table), None)
        if pair:
            a, b = pair
            f = edit_effect(probs(a), probs(b), claim_id=claim_id, edit=f"moving the object (“{a}” → “{b}”, which "
                            f"differ only in position)")
            rows.append(_row(where, f, f"{f.numbers.get('drop', float('nan')):+.1%} drop",
                             "fall of the top class's probability between two variants that differ only in position"))
        else:
            moved = [n for n, e in variants.items() if edit_aspects(e) == {"position"} and n in table]
            if moved:
                f = edit_effect(probs("Original"), probs(moved[0]), claim_id=claim_id, edit=f"moving the object (“{moved[0]}”)")
                rows.append(_row(where, f, f"{f.numbers.get('drop', float('nan')):+.1%} drop",
                                 "fall of the original top class's probability"))
            else:
                rows.append(_row(where, not_testable(claim_id, "no declared variant, and no pair of variants, differs "
                                                     "from another only in position"), "—"))
        for c in perturb_caveats(variants, r.meta):
            caveats.append({"where": where, "caveat": asdict(c)})
    if not rows:
        why = ("the perturbation section is off" if not _enabled(result, "perturb") else
               "no image declares variants (see the location-and-size chapter)")
        rows.append(_row("—", not_testable(claim_id, why), "—"))
    return rows, caveats


def claims_context(result: RunResult) -> dict[str, Any]:
    """One entry per study claim: the claim, and one row per model (or model pair) with its number,
    interval and rule-made verdict; plus the perturbation confounds."""
    entries, confounds = [], []
    for claim in study_claims():
        if claim.claim_id in _VIT or claim.claim_id in _SWIN:
            rows = _attention_rows(result, claim.claim_id)
        elif claim.claim_id == "rollout_mean_fusion":
            rows = _fusion_rows(result)
        elif claim.claim_id == "lime_cross_model_agreement":
            rows = _lime_rows(result)
        else:
            rows, caveats = _edit_rows(result, claim.claim_id)
            confounds += caveats
        entries.append({"claim": asdict(claim), "rows": rows})
    return {"claims": entries, "confounds": confounds}
