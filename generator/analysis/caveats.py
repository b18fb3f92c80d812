"""Caveats beside results, made by the rules of :mod:`generator.analysis.findings` from other sections' results.

Used by the page extras of the sections that show the qualified result (maps and rollout: the
randomisation sanity check from the faithfulness section; perturbation: confounded variants)
and by the claims chapter. Imports no section, so any section may use it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .findings import edit_confounds, sanity_check_failed

__all__ = ["perturb_caveats", "sanity_caveats"]


def sanity_caveats(build: Any, results: list, methods=None) -> dict[str, list[dict]]:
    """Model → the failed sanity checks (:func:`generator.analysis.findings.sanity_check_failed`, as dicts) of the
    maps shown for ``results``' images, read from the faithfulness section's results of the same
    image and model. ``methods``: keep only maps whose title passes this test (default: all)."""
    if build is None:
        return {}
    wanted = {(r.model, r.image) for r in results}
    out: dict[str, list[dict]] = {}
    for f in build.results:
        if f.section != "faithfulness" or (f.model, f.image) not in wanted:
            continue
        how = f"top {f.meta['randomise_blocks']} blocks and the classifier head re-initialised"
        for row in f.meta["rows"]:
            if methods is not None and not methods(row["method"]):
                continue
            caveat = sanity_check_failed(row["method"], row["randomisation_correlation"], f.meta["flag_correlation"], how)
            if caveat is not None:
                out.setdefault(f.model, []).append(asdict(caveat))
    return out


def perturb_caveats(variants: dict[str, list], record_meta: dict) -> list:
    """The confound caveats of one image's perturbation record (:func:`generator.analysis.findings.edit_confounds`).

    Args:
        variants: variant name → its declared edits.
        record_meta: the perturbation record's meta (its "table" and "original_top1").
    """
    probs = {row["Variant"]: row["Original top-1 %"] / 100.0 for row in record_meta["table"]}
    return edit_confounds(variants, probs, record_meta["original_top1"])
