"""Findings rules: each verdict and sentence flips when its numbers cross the named threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import generator.analysis.findings as fi
from generator.attention.capture import TokenLayout
from generator.attention.stats import SwinAttentionStats, swin_block_stats, vit_stats_from_attention
from generator.analysis.findings import Finding, study_claims
from generator.attention.windows import BlockGeometry

EPS = 1e-6


def test_spatial_then_content_flips_at_the_distance_and_trend_thresholds():
    uniform = 3.0
    gain = fi.DISTANCE_GAIN_MIN_FRACTION * uniform
    falling = [0.9, 0.7, 0.5, 0.3, 0.2, 0.1]
    ok = fi.spatial_then_content([1, 1, 1.5, 1.5, 1 + gain + EPS, 1 + gain + EPS], falling, uniform)
    short = fi.spatial_then_content([1, 1, 1.5, 1.5, 1 + gain - EPS, 1 + gain - EPS], falling, uniform)
    assert ok.verdict == "supported" and "as the study describes" in ok.sentence.lower()
    assert short.verdict == "contradicted" and "contradicts" in short.sentence
    assert "do not attend farther" in short.sentence
    assert ok.thresholds["min_gain_patches"] == pytest.approx(gain)
    rising = fi.spatial_then_content([1, 1, 2, 2, 3, 3], falling[::-1], uniform)
    assert rising.verdict == "contradicted" and "do not become less positional" in rising.sentence
    assert fi.spatial_then_content([1, 2], [0.5, 0.4], uniform).verdict == "not testable"
    assert fi.spatial_then_content([1, 2, 3], [np.nan] * 3, uniform).verdict == "not testable"


def test_growing_sparsity_flips_with_the_sign_of_the_trend():
    assert fi.growing_sparsity([0.9, 0.8, 0.7, 0.6]).verdict == "supported"
    rising = fi.growing_sparsity([0.6, 0.7, 0.8, 0.9])
    assert rising.verdict == "contradicted" and "rises" in rising.sentence
    flat = fi.growing_sparsity([0.8, 0.6, 0.9, 0.7])  # ρ = 0
    assert flat.verdict == "contradicted" and "no steady fall" in flat.sentence
    assert flat.numbers["entropy_rho"] == pytest.approx(0.0)


@pytest.mark.parametrize("delta, verdict", [(+EPS, "supported"), (-EPS, "contradicted")])
def test_later_blocks_alike_flips_at_the_similarity_threshold(delta, verdict):
    sim = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.7, fi.LATE_SIMILARITY_MIN + delta, fi.LATE_SIMILARITY_MIN + delta,
           fi.LATE_SIMILARITY_MIN + delta]  # 12 blocks: the last third holds 3 consecutive pairs
    finding = fi.later_blocks_alike(sim)
    assert finding.verdict == verdict and finding.numbers["late_pairs"] == 3
    assert finding.numbers["late_similarity"] == pytest.approx(fi.LATE_SIMILARITY_MIN + delta)


@pytest.mark.parametrize("delta, verdict", [(+EPS, "supported"), (-EPS, "contradicted")])
def test_late_sparse_rows_flips_at_the_concentration_threshold(delta, verdict):
    finding = fi.late_sparse_rows([0.2, 0.2, 0.3, 0.3, fi.LATE_CLS_CONCENTRATION_MIN + delta,
                                   fi.LATE_CLS_CONCENTRATION_MIN + delta], 0.1)
    assert finding.verdict == verdict
    assert fi.late_sparse_rows([np.nan] * 6, 0.1).verdict == "not testable"


def test_swin_head_shapes_counts_and_names_what_is_missing():
    full = fi.swin_head_shapes(["vertical", "horizontal", "ring", "mixed"])
    assert full.verdict == "supported" and full.numbers["ring"] == 1 and full.numbers["heads"] == 4
    partial = fi.swin_head_shapes(["vertical", "mixed", "local"])
    assert partial.verdict == "contradicted" and "no horizontal or ring head" in partial.sentence
    assert fi.swin_head_shapes([]).verdict == "not testable"


@pytest.mark.parametrize("delta, verdict", [(+EPS, "supported"), (-EPS, "contradicted")])
def test_bias_rule_flips_at_its_threshold(delta, verdict):
    t = fi.BIAS_EXPLAINS_MIN_CORRELATION
    assert fi.bias_explains_attention([t - 0.3, t + delta, t + 0.3]).verdict == verdict


def test_rules_fed_from_other_sections():
    m = fi.FUSION_MIN_MARGIN
    assert fi.mean_fusion_best(0.20, 0.20 + m + EPS, higher_is_better=False).verdict == "supported"
    tie = fi.mean_fusion_best(0.20, 0.20 + m - EPS, higher_is_better=False)
    assert tie.verdict == "contradicted" and "within" in tie.sentence
    worse = fi.mean_fusion_best(0.40, 0.60, higher_is_better=True, metric="insertion AUC")
    assert worse.verdict == "contradicted" and "max fusion does better" in worse.sentence
    assert fi.mean_fusion_best(math.nan, 0.3, higher_is_better=True).verdict == "not testable"

    t = fi.LIME_AGREEMENT_MIN_IOU
    assert fi.lime_models_agree({"vit/swin": t + EPS, "swin-t/swin-b": t + EPS}).verdict == "supported"
    low = fi.lime_models_agree({"vit/swin": t - 0.2, "swin-t/swin-b": t + 0.1})
    assert low.verdict == "contradicted" and low.numbers["lowest_pair"] == "vit/swin"
    assert fi.lime_models_agree({}).verdict == "not testable"

    original = {"Bullmastiff": 0.392, "Tabby cat": 0.105, "Boxer": 0.073}
    moved = fi.edit_effect(original, {"Tabby cat": 0.230, "Boxer": 0.208, "Bullmastiff": 0.033})
    assert moved.verdict == "supported" and "becomes Tabby cat" in moved.sentence
    drop = fi.EDIT_MIN_DROP
    small = {"Bullmastiff": 0.392 - drop + 0.01, "Tabby cat": 0.105}
    kept = fi.edit_effect(original, small, claim_id="size_effect", edit="shrinking the object")
    assert kept.verdict == "contradicted" and kept.claim_id == "size_effect" and "barely" in kept.sentence
    lower = fi.edit_effect(original, {"Bullmastiff": 0.392 - drop - 0.01, "Tabby cat": 0.105})
    assert lower.verdict == "supported"


def test_claims_are_unique_and_name_existing_rules():
    claims = study_claims()
    ids = [c.claim_id for c in claims]
    assert len(ids) == len(set(ids)) >= 10
    for claim in claims:
        assert callable(getattr(fi, claim.rule)), claim.rule
        assert claim.observation and claim.measurement


def test_finding_refuses_unknown_verdicts():
    with pytest.raises(ValueError):
        Finding("x", "maybe", "")


def test_findings_from_stats_cover_their_claims_and_handle_one_image():
    torch.manual_seed(0)
    layout = TokenLayout(prefix_names=("CLS",), grid=(4, 4))
    attn = torch.rand(4, 1, 2, 17, 17).softmax(-1)  # one image: positional scores are undefined
    findings = fi.vit_findings(vit_stats_from_attention(attn, layout, (4, 4)))
    known = {c.claim_id for c in study_claims()}
    assert {f.claim_id for f in findings} <= known
    assert findings[0].claim_id == "vit_spatial_then_content" and findings[0].verdict == "not testable"
    assert all(f.verdict in fi.VERDICTS and f.sentence for f in findings)

    geometry = BlockGeometry(grid=(8, 8), window=(4, 4), shift=(0, 0))
    window_attn = torch.rand(2, 4, 3, 16, 16).softmax(-1)
    stats = SwinAttentionStats(blocks={(0, 0): swin_block_stats(window_attn, geometry, bias=torch.randn(3, 16, 16))})
    shapes, bias = fi.swin_findings(stats)
    assert shapes.claim_id == "swin_head_shapes" and shapes.numbers["heads"] == 3
    assert bias.claim_id == "swin_position_bias" and bias.verdict in fi.VERDICTS


# ----------------------------------------------------------------------------- caveats


def test_near_chance_flips_at_three_times_uniform():
    limit = fi.NEAR_CHANCE_FACTOR / 10
    below, above = fi.near_chance(limit - EPS, 10), fi.near_chance(limit + EPS, 10)
    assert above is None
    assert below is not None and below.kind == "near_chance" and "does not recognise" in below.sentence
    assert below.numbers["limit"] == pytest.approx(limit)
    assert fi.near_chance(0.01, 1) is None  # one class: no chance level


@pytest.mark.parametrize("rho, flagged", [(0.5, True), (0.49, False), (-0.5, True), (-0.49, False), (float("nan"), False)])
def test_sanity_check_is_two_sided_and_states_its_threshold(rho, flagged):
    caveat = fi.sanity_check_failed("rollout (mean)", rho, 0.5, "top 2 blocks re-initialised")
    assert (caveat is not None) == flagged
    if caveat:
        assert f"{rho:.2f}" in caveat.sentence and "|ρ| ≥ 0.50" in caveat.sentence


def test_edit_confounds_on_the_default_declarations():
    size = [{"op": "scale", "box": [0, 0, 28, 28], "factor": 0.6, "anchor": "center", "fill": [0, 0, 0]}]
    location = [{"op": "scale", "box": [0, 0, 28, 28], "factor": 0.6, "anchor": "top-left", "fill": [0, 0, 0]}]
    split = [{"op": "split", "box": [0, 0, 28, 28], "parts": 2, "axis": "x", "gap": 6, "fill": [0, 0, 0]}]
    variants = {"Size test": size, "Location test": location, "Split test": split}
    assert fi.edit_aspects(size) == {"size"} and fi.edit_aspects(location) == {"size", "position"}
    assert fi.position_only_pair(size, location) and not fi.position_only_pair(size, split)
    probs = {"Original": 0.88, "Size test": 0.01, "Location test": 0.03, "Split test": 0.5}
    caveats = fi.edit_confounds(variants, probs, "Ankle boot")
    kinds = [c.kind for c in caveats]
    assert kinds == ["confounded_edit", "position_pair"]
    assert "Location test" in caveats[0].sentence and "size change alone" in caveats[0].sentence
    assert "differ only in where the object sits" in caveats[1].sentence
    # a size change below the threshold is not blamed
    quiet = fi.edit_confounds(variants, {**probs, "Size test": 0.88 - fi.EDIT_MIN_DROP + EPS}, "Ankle boot")
    assert "size change alone" not in quiet[0].sentence
