"""Findings: every sentence the gallery says about how a model behaves, made from numbers by a rule.

Each rule takes plain numbers (floats, sequences, dicts), compares them with thresholds that
are named constants of this module, and returns a :class:`Finding`: the claim it tests, a
verdict ("supported", "contradicted" or "not testable"), one sentence, and the numbers and
thresholds it used. When the data go against the study, the sentence says so. No other
module writes such sentences.

:func:`study_claims` lists the observations of the study (in this project's words) with the
measurement and rule that test each; :func:`vit_findings` and :func:`swin_findings` feed the
attention rules from :mod:`generator.attention.stats` results. The rules for rollout fusion,
LIME agreement and image edits take numbers from those sections, so they can be fed later.
:func:`token_claims` lists what Darcet et al. (2024) report about high-norm tokens and registers,
tested by :func:`high_norm_tokens` and :func:`registers_take_attention` on the tokens section's numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr

if TYPE_CHECKING:  # attention_stats imports torch; pages read findings without it
    from ..attention.stats import SwinAttentionStats, VitAttentionStats

__all__ = [
    "BIAS_EXPLAINS_MIN_CORRELATION",
    "DISTANCE_GAIN_MIN_FRACTION",
    "FUSION_MIN_MARGIN",
    "LATE_CLS_CONCENTRATION_MIN",
    "LATE_SIMILARITY_MIN",
    "LIME_AGREEMENT_MIN_IOU",
    "MIN_BLOCKS_FOR_TREND",
    "MIN_HEADS_PER_SHAPE",
    "EDIT_MIN_DROP",
    "OUTLIER_MIN_ATTENTION_RATIO",
    "REGISTER_MIN_SHARE_RATIO",
    "TREND_MIN_RHO",
    "VERDICTS",
    "Claim",
    "Finding",
    "Caveat",
    "NEAR_CHANCE_FACTOR",
    "POSITION_KEYS",
    "bias_explains_attention",
    "edit_aspects",
    "edit_confounds",
    "near_chance",
    "position_only_pair",
    "registers_take_attention",
    "sanity_check_failed",
    "edit_effect",
    "growing_sparsity",
    "high_norm_tokens",
    "late_sparse_rows",
    "later_blocks_alike",
    "lime_models_agree",
    "mean_fusion_best",
    "not_testable",
    "spatial_then_content",
    "study_claims",
    "swin_findings",
    "swin_head_shapes",
    "token_claims",
    "vit_findings",
]

VERDICTS = ("supported", "contradicted", "not testable")

# ---- thresholds: every number a verdict depends on ------------------------------------------
#: A trend over blocks needs at least this many blocks (early and late thirds must differ).
MIN_BLOCKS_FOR_TREND = 3
#: |Spearman ρ| between block index and a per-block value that counts as a trend.
TREND_MIN_RHO = 0.5
#: Late blocks' mean distance must exceed early blocks' by this fraction of the grid's
#: uniform-attention mean distance (a scale-free "X patches").
DISTANCE_GAIN_MIN_FRACTION = 0.10
#: Mean consecutive-block similarity (Pearson) within the last third that counts as "alike".
LATE_SIMILARITY_MIN = 0.75
#: Share of the CLS row's patch mass on its top 10 % of patches, last third, that counts as sparse.
LATE_CLS_CONCENTRATION_MIN = 0.5
#: Heads of each named shape (vertical, horizontal, ring) a Swin model must have.
MIN_HEADS_PER_SHAPE = 1
#: Median over heads of the bias-only correlation that counts as "the bias shapes attention".
BIAS_EXPLAINS_MIN_CORRELATION = 0.5
#: Faithfulness difference (AUC) by which mean fusion must beat max fusion.
FUSION_MIN_MARGIN = 0.01
#: Mean cross-model IoU of LIME's top regions that counts as "the models look at the same areas".
LIME_AGREEMENT_MIN_IOU = 0.5
#: Drop in the original top class's probability (absolute, 0–1) that counts as an effect of an edit.
EDIT_MIN_DROP = 0.10
#: Attention received per outlier patch, as a multiple of that received per other patch, that counts as
#: "outliers draw the attention" (high-norm tokens).
OUTLIER_MIN_ATTENTION_RATIO = 2.0
#: Share of attention on the register tokens, as a multiple of their share of the tokens, that counts as
#: "registers take attention".
REGISTER_MIN_SHARE_RATIO = 2.0


@dataclass(frozen=True)
class Finding:
    """One rule's verdict on one claim.

    Attributes:
        claim_id: the claim tested (see :func:`study_claims`).
        verdict: one of :data:`VERDICTS`.
        sentence: the sentence shown in the gallery.
        numbers: the measured values the verdict rests on.
        thresholds: the named thresholds used, by constant name.
    """

    claim_id: str
    verdict: str
    sentence: str
    numbers: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


@dataclass(frozen=True)
class Claim:
    """An observation of the study and how this project tests it.

    Attributes:
        claim_id: stable id, used by :class:`Finding`.
        observation: what the study reports, in this project's words.
        measurement: the numbers that test it, and where they come from.
        rule: name of the function of this module that gives the verdict.
    """

    claim_id: str
    observation: str
    measurement: str
    rule: str


def study_claims() -> tuple[Claim, ...]:
    """The study's observations that the gallery tests, in a fixed order."""
    return (
        Claim("vit_spatial_then_content",
              "In early ViT blocks heads split the image by position (regions, columns); later heads follow "
              "the objects' features.",
              "attention_stats: mean attention distance per block (patches) and positional score per block "
              "(cross-image correlation of each head's patch-to-patch matrix)", "spatial_then_content"),
        Claim("vit_growing_sparsity",
              "Deeper ViT blocks have sparser maps: most of a row is dark, a few patches are bright.",
              "attention_stats: normalised row entropy per block, its Spearman trend over depth",
              "growing_sparsity"),
        Claim("vit_later_blocks_alike",
              "The last ViT blocks show much the same attention patterns as each other.",
              "attention_stats: Pearson similarity of consecutive blocks' head-averaged patch-to-patch "
              "matrices, last third of the blocks", "later_blocks_alike"),
        Claim("vit_late_sparse_rows",
              "In late blocks the class token attends to only a few patches.",
              "attention_stats: share of the CLS row's patch mass on its top 10 % of patches, last third",
              "late_sparse_rows"),
        Claim("vit_early_columns",
              "Block 0's heads draw column-like maps.",
              "not measured by attention_stats (would need a column-structure score of each head's CLS map)",
              "not_testable"),
        Claim("swin_head_shapes",
              "Swin heads come in kinds: some look above and below the query, some to its sides, some to a "
              "surrounding ring while ignoring the nearest patches.",
              "attention_stats: each head's mean attention by relative offset inside windows, classified by "
              "classify_kernel", "swin_head_shapes"),
        Claim("swin_position_bias",
              "Swin adds its positional information straight to the attention scores, which may steer where "
              "attention goes.",
              "attention_stats: Pearson correlation between observed window attention and "
              "softmax(relative position bias + shift mask), per head", "bias_explains_attention"),
        Claim("rollout_mean_fusion",
              "Attention rollout with the heads averaged gives better maps than with their maximum.",
              "faithfulness section: deletion (or insertion) AUC of rollout with mean and with max head fusion",
              "mean_fusion_best"),
        Claim("lime_cross_model_agreement",
              "LIME picks out similar regions for ViT and Swin models of different sizes.",
              "LIME section: IoU of the top positive regions between pairs of models on the same image",
              "lime_models_agree"),
        Claim("placement_effect",
              "Moving the object to another place in the image changes the predicted classes.",
              "perturbation section: class probabilities of the original and the location-edited image",
              "edit_effect"),
        Claim("size_effect",
              "Shrinking the object changes the predicted classes.",
              "perturbation section: class probabilities of the original and the size-edited image",
              "edit_effect"),
    )


def token_claims() -> tuple[Claim, ...]:
    """What Darcet et al. (2024, "Vision Transformers Need Registers") report, as the tokens section tests it."""
    return (
        Claim("tokens_high_norm",
              "A few patch tokens carry much larger norms than the others, and the class token's attention "
              "gathers on them (Darcet et al. 2024).",
              "tokens section: the patch tokens entering the last block whose L2 norm exceeds the configured "
              "factor × the median patch norm, and the last block's head-averaged attention each receives from "
              "the class token (the mean patch query where there is none) against each other patch",
              "high_norm_tokens"),
        Claim("tokens_register_attention",
              "Register tokens added to the sequence take a large share of the attention (Darcet et al. 2024).",
              "tokens section: the share of the last block's head-averaged attention of the class token (the "
              "mean patch query where there is none) on the register tokens, against their share of the tokens",
              "registers_take_attention"),
    )


# ----------------------------------------------------------------------------- helpers


def _finite(values) -> np.ndarray | None:
    arr = np.asarray(values, dtype=np.float64)
    return arr if arr.size and np.isfinite(arr).all() else None


def _third(n: int) -> int:
    return max(1, n // 3)


def _rho(values: np.ndarray) -> float:
    if np.ptp(values) == 0:
        return 0.0
    return float(spearmanr(np.arange(len(values)), values).statistic)


def not_testable(claim_id: str, reason: str, numbers: dict | None = None) -> Finding:
    """A finding for a claim the available numbers cannot decide; ``reason`` completes the sentence."""
    return Finding(claim_id, "not testable", f"This cannot be tested here: {reason}.", numbers or {}, {})


# ----------------------------------------------------------------------------- ViT rules


def spatial_then_content(mean_distance: Sequence[float], positional: Sequence[float],
                         uniform_distance: float) -> Finding:
    """Early blocks attend nearer than late ones, and heads get less positional with depth.

    Args:
        mean_distance: (blocks,) mean attention distance per block (patches; heads and images averaged).
        positional: (blocks,) positional score per block.
        uniform_distance: mean distance of uniform attention over the grid (patches).

    Supported when late − early mean distance (last and first third of the blocks) is at
    least ``DISTANCE_GAIN_MIN_FRACTION · uniform_distance`` and Spearman ρ(block, positional)
    ≤ −``TREND_MIN_RHO``; contradicted otherwise; not testable with fewer than
    ``MIN_BLOCKS_FOR_TREND`` blocks or non-finite numbers (e.g. one image).
    """
    cid = "vit_spatial_then_content"
    dist, pos = _finite(mean_distance), _finite(positional)
    if dist is None or pos is None or len(dist) != len(pos):
        return not_testable(cid, "per-block distances and positional scores are needed (positional scores need two "
                                 "or more images)")
    if len(dist) < MIN_BLOCKS_FOR_TREND:
        return not_testable(cid, f"the model has {len(dist)} blocks, fewer than {MIN_BLOCKS_FOR_TREND}")
    t = _third(len(dist))
    early, late = float(dist[:t].mean()), float(dist[-t:].mean())
    gain, min_gain, rho = late - early, DISTANCE_GAIN_MIN_FRACTION * uniform_distance, _rho(pos)
    numbers = {"early_distance": early, "late_distance": late, "distance_gain": gain, "positional_rho": rho,
               "positional_first": float(pos[0]), "positional_last": float(pos[-1]), "uniform_distance": uniform_distance}
    thresholds = {"DISTANCE_GAIN_MIN_FRACTION": DISTANCE_GAIN_MIN_FRACTION, "min_gain_patches": min_gain,
                  "TREND_MIN_RHO": TREND_MIN_RHO}
    nearer, fading = gain >= min_gain, rho <= -TREND_MIN_RHO
    if nearer and fading:
        sentence = (f"As the study describes, attention starts spatial and turns to content: the first blocks reach "
                    f"{early:.2f} patches on average and the last {late:.2f} (+{gain:.2f}, at least {min_gain:.2f} "
                    f"needed), and heads become less positional with depth (Spearman ρ = {rho:.2f}).")
        return Finding(cid, "supported", sentence, numbers, thresholds)
    parts = []
    if not nearer:
        parts.append(f"the last blocks do not attend farther than the first ones by at least {min_gain:.2f} "
                     f"patches ({early:.2f} → {late:.2f})")
    else:
        parts.append(f"attention does reach farther in the last blocks ({early:.2f} → {late:.2f} patches)")
    if not fading:
        parts.append(f"heads do not become less positional with depth (Spearman ρ = {rho:.2f}, "
                     f"≤ {-TREND_MIN_RHO:.2f} needed; scores {pos[0]:.2f} → {pos[-1]:.2f})")
    else:
        parts.append(f"heads do become less positional (ρ = {rho:.2f})")
    joiner = ", and " if not nearer and not fading else ", but "
    sentence = "This model contradicts the study's spatial-then-content picture: " + joiner.join(parts) + "."
    return Finding(cid, "contradicted", sentence, numbers, thresholds)


def growing_sparsity(entropy: Sequence[float]) -> Finding:
    """Attention gets sparser with depth: Spearman ρ(block, entropy) ≤ −``TREND_MIN_RHO``.

    Args:
        entropy: (blocks,) normalised entropy per block (heads and images averaged).
    """
    cid = "vit_growing_sparsity"
    ent = _finite(entropy)
    if ent is None or len(ent) < MIN_BLOCKS_FOR_TREND:
        return not_testable(cid, f"entropies of at least {MIN_BLOCKS_FOR_TREND} blocks are needed")
    rho = _rho(ent)
    numbers = {"entropy_first": float(ent[0]), "entropy_last": float(ent[-1]), "entropy_min": float(ent.min()),
               "entropy_rho": rho}
    thresholds = {"TREND_MIN_RHO": TREND_MIN_RHO}
    if rho <= -TREND_MIN_RHO:
        return Finding(cid, "supported", f"Attention gets sparser with depth, as the study reports: normalised entropy "
                       f"falls from {ent[0]:.2f} in the first block to {ent[-1]:.2f} in the last "
                       f"(Spearman ρ = {rho:.2f}).", numbers, thresholds)
    if rho >= TREND_MIN_RHO:
        trend = f"rises with depth, from {ent[0]:.2f} to {ent[-1]:.2f} (Spearman ρ = {rho:.2f})"
    else:
        trend = f"shows no steady fall with depth ({ent[0]:.2f} in the first block, {ent[-1]:.2f} in the last, " \
                f"Spearman ρ = {rho:.2f}, ≤ {-TREND_MIN_RHO:.2f} needed)"
    return Finding(cid, "contradicted", f"Contrary to the study, attention does not get sparser with depth in this "
                   f"model: normalised entropy {trend}.", numbers, thresholds)


def later_blocks_alike(similarity: Sequence[float]) -> Finding:
    """The last blocks attend alike: mean consecutive similarity over the pairs inside the last
    third of the blocks ≥ ``LATE_SIMILARITY_MIN``.

    Args:
        similarity: (blocks − 1,) Pearson similarity of block b with block b + 1 (images averaged).
    """
    cid = "vit_later_blocks_alike"
    sim = _finite(similarity)
    if sim is None or len(sim) + 1 < MIN_BLOCKS_FOR_TREND:
        return not_testable(cid, f"similarities of at least {MIN_BLOCKS_FOR_TREND} blocks are needed")
    blocks = len(sim) + 1
    pairs = max(1, _third(blocks) - 1)  # pairs with both blocks in the last third
    late, early = float(sim[-pairs:].mean()), float(sim[:pairs].mean())
    numbers = {"late_similarity": late, "early_similarity": early, "late_pairs": pairs}
    thresholds = {"LATE_SIMILARITY_MIN": LATE_SIMILARITY_MIN}
    first = blocks - pairs - 1
    if late >= LATE_SIMILARITY_MIN:
        return Finding(cid, "supported", f"The last blocks attend much alike, as the study saw: consecutive blocks "
                       f"{first}–{blocks - 1} correlate at {late:.2f} on average (threshold {LATE_SIMILARITY_MIN:.2f}; "
                       f"the first blocks: {early:.2f}).", numbers, thresholds)
    return Finding(cid, "contradicted", f"Unlike the study's impression, the last blocks do not attend alike: "
                   f"consecutive blocks {first}–{blocks - 1} correlate at only {late:.2f} on average "
                   f"(threshold {LATE_SIMILARITY_MIN:.2f}; the first blocks: {early:.2f}).", numbers, thresholds)


def late_sparse_rows(cls_concentration: Sequence[float], uniform_share: float) -> Finding:
    """The CLS token attends to few patches late: mean top-10 % share over the last third of
    the blocks ≥ ``LATE_CLS_CONCENTRATION_MIN``.

    Args:
        cls_concentration: (blocks,) CLS concentration per block (heads and images averaged).
        uniform_share: the share a uniform CLS row would give (k / patches), for the sentence.
    """
    cid = "vit_late_sparse_rows"
    conc = _finite(cls_concentration)
    if conc is None or len(conc) < MIN_BLOCKS_FOR_TREND:
        return not_testable(cid, "the model has no class token, or fewer than "
                                 f"{MIN_BLOCKS_FOR_TREND} blocks")
    late = float(conc[-_third(len(conc)):].mean())
    numbers = {"late_concentration": late, "uniform_share": uniform_share, "first_block": float(conc[0])}
    thresholds = {"LATE_CLS_CONCENTRATION_MIN": LATE_CLS_CONCENTRATION_MIN}
    if late >= LATE_CLS_CONCENTRATION_MIN:
        return Finding(cid, "supported", f"In the last blocks the class token attends to a few patches, as the study "
                       f"notes: its top 10 % of patches take {late:.0%} of its attention (uniform would be "
                       f"{uniform_share:.0%}).", numbers, thresholds)
    return Finding(cid, "contradicted", f"The class token's attention stays spread in the last blocks, against the "
                   f"study's sparse rows: its top 10 % of patches take only {late:.0%} of it (at least "
                   f"{LATE_CLS_CONCENTRATION_MIN:.0%} needed; uniform would be {uniform_share:.0%}).",
                   numbers, thresholds)


# ----------------------------------------------------------------------------- Swin rules

_SHAPES = ("vertical", "horizontal", "ring")


def swin_head_shapes(classes: Sequence[str]) -> Finding:
    """Swin has vertical, horizontal and ring-shaped heads: at least ``MIN_HEADS_PER_SHAPE`` of each.

    Args:
        classes: the kernel class of every head considered (``classify_kernel`` names).
    """
    cid = "swin_head_shapes"
    if not classes:
        return not_testable(cid, "no Swin heads were classified")
    counts = Counter(classes)
    numbers = {name: counts.get(name, 0) for name in ("vertical", "horizontal", "local", "ring", "mixed")}
    numbers["heads"] = len(classes)
    thresholds = {"MIN_HEADS_PER_SHAPE": MIN_HEADS_PER_SHAPE}
    tally = ", ".join(f"{numbers[n]} {n}" for n in ("vertical", "horizontal", "local", "ring", "mixed"))
    missing = [n for n in _SHAPES if numbers[n] < MIN_HEADS_PER_SHAPE]
    if not missing:
        return Finding(cid, "supported", f"As in the study, this Swin has heads of each kind: of {len(classes)} heads, "
                       f"{tally}.", numbers, thresholds)
    return Finding(cid, "contradicted", f"Not all the head kinds the study describes appear here: no {' or '.join(missing)} "
                   f"head among {len(classes)} ({tally}).", numbers, thresholds)


def bias_explains_attention(correlations: Sequence[float]) -> Finding:
    """The relative position bias shapes Swin attention: median over heads of the bias-only
    correlation ≥ ``BIAS_EXPLAINS_MIN_CORRELATION``.

    Args:
        correlations: one bias-only Pearson correlation per head (images averaged), all blocks.
    """
    cid = "swin_position_bias"
    corr = _finite(correlations)
    if corr is None:
        return not_testable(cid, "no finite bias correlations were given")
    median = float(np.median(corr))
    above = int((corr >= BIAS_EXPLAINS_MIN_CORRELATION).sum())
    numbers = {"median": median, "min": float(corr.min()), "max": float(corr.max()), "heads": len(corr),
               "heads_above": above}
    thresholds = {"BIAS_EXPLAINS_MIN_CORRELATION": BIAS_EXPLAINS_MIN_CORRELATION}
    if median >= BIAS_EXPLAINS_MIN_CORRELATION:
        return Finding(cid, "supported", f"The position bias alone goes far to explain Swin's attention: the bias-only "
                       f"attention correlates with the observed at a median {median:.2f} over {len(corr)} heads "
                       f"({above} at or above {BIAS_EXPLAINS_MIN_CORRELATION:.2f}).", numbers, thresholds)
    return Finding(cid, "contradicted", f"The position bias alone explains little of Swin's attention: the bias-only "
                   f"attention correlates with the observed at a median of only {median:.2f} over {len(corr)} heads "
                   f"({above} at or above {BIAS_EXPLAINS_MIN_CORRELATION:.2f}); the content of the image matters more.",
                   numbers, thresholds)


# ----------------------------------------------------------------------------- other sections


def mean_fusion_best(mean_auc: float, max_auc: float, *, higher_is_better: bool, metric: str = "deletion AUC") -> Finding:
    """Mean head fusion gives more faithful rollout than max fusion, by at least ``FUSION_MIN_MARGIN``.

    Args:
        mean_auc, max_auc: the faithfulness score of each fusion (averaged over images).
        higher_is_better: True for insertion AUC, False for deletion AUC.
        metric: its name, for the sentence.
    """
    cid = "rollout_mean_fusion"
    if not (math.isfinite(mean_auc) and math.isfinite(max_auc)):
        return not_testable(cid, f"{metric} of both fusions is needed")
    advantage = (mean_auc - max_auc) if higher_is_better else (max_auc - mean_auc)
    numbers = {"mean": mean_auc, "max": max_auc, "advantage": advantage}
    thresholds = {"FUSION_MIN_MARGIN": FUSION_MIN_MARGIN}
    if advantage >= FUSION_MIN_MARGIN:
        return Finding(cid, "supported", f"Mean head fusion gives the more faithful rollout, as the study found: "
                       f"{metric} {mean_auc:.3f} against {max_auc:.3f} for max fusion.", numbers, thresholds)
    if advantage <= -FUSION_MIN_MARGIN:
        how = f"max fusion does better ({metric} {max_auc:.3f} against {mean_auc:.3f} for mean)"
    else:
        how = f"the two are within {FUSION_MIN_MARGIN:.3f} of each other ({metric} {mean_auc:.3f} mean, {max_auc:.3f} max)"
    return Finding(cid, "contradicted", f"Mean fusion is not the more faithful rollout here, unlike the study: {how}.",
                   numbers, thresholds)


def lime_models_agree(ious: Mapping[str, float]) -> Finding:
    """LIME highlights similar regions across models: mean pairwise IoU ≥ ``LIME_AGREEMENT_MIN_IOU``.

    Args:
        ious: model pair label → IoU of their top LIME regions (images averaged).
    """
    cid = "lime_cross_model_agreement"
    values = _finite(list(ious.values()))
    if values is None or len(values) == 0:
        return not_testable(cid, "LIME regions of at least two models are needed")
    mean = float(values.mean())
    worst = min(ious, key=ious.get)
    numbers = {"mean_iou": mean, "pairs": len(values), "lowest_pair": worst, "lowest_iou": float(ious[worst])}
    thresholds = {"LIME_AGREEMENT_MIN_IOU": LIME_AGREEMENT_MIN_IOU}
    if mean >= LIME_AGREEMENT_MIN_IOU:
        return Finding(cid, "supported", f"The models' LIME regions largely coincide, as the study saw: mean IoU "
                       f"{mean:.2f} over {len(values)} model pairs (lowest {ious[worst]:.2f}, {worst}).",
                       numbers, thresholds)
    return Finding(cid, "contradicted", f"The models' LIME regions differ more than the study suggests: mean IoU "
                   f"{mean:.2f} over {len(values)} model pairs, below {LIME_AGREEMENT_MIN_IOU:.2f} "
                   f"(lowest {ious[worst]:.2f}, {worst}).", numbers, thresholds)


def edit_effect(original: Mapping[str, float], edited: Mapping[str, float], *,
                claim_id: str = "placement_effect", edit: str = "moving the object") -> Finding:
    """An image edit changes the prediction: the original top class loses at least
    ``EDIT_MIN_DROP`` probability, or another class becomes the top one.

    Args:
        original, edited: class name → probability (0–1) before and after the edit (classes
            missing from ``edited`` count as 0).
        claim_id: "placement_effect" or "size_effect".
        edit: what the edit did, for the sentence.
    """
    if not original or not edited:
        return not_testable(claim_id, "probabilities of the original and the edited image are needed")
    top = max(original, key=original.get)
    new_top = max(edited, key=edited.get)
    before, after = float(original[top]), float(edited.get(top, 0.0))
    drop = before - after
    numbers = {"top_class": top, "before": before, "after": after, "drop": drop, "edited_top_class": new_top}
    thresholds = {"EDIT_MIN_DROP": EDIT_MIN_DROP}
    if drop >= EDIT_MIN_DROP or new_top != top:
        change = f"the top class becomes {new_top}" if new_top != top else f"{top} stays on top"
        return Finding(claim_id, "supported", f"{edit[:1].upper() + edit[1:]} changes the prediction, as in the study: "
                       f"{top} goes from {before:.1%} to {after:.1%} and {change}.", numbers, thresholds)
    return Finding(claim_id, "contradicted", f"{edit[:1].upper() + edit[1:]} barely changes the prediction, unlike in the "
                   f"study: {top} goes from {before:.1%} to {after:.1%} (a drop of at least {EDIT_MIN_DROP:.0%} "
                   f"needed) and stays the top class.", numbers, thresholds)


# ----------------------------------------------------------------------------- tokens section rules


def _images(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''}"


def high_norm_tokens(outliers: Sequence[int], per_outlier: Sequence[float], per_other: Sequence[float], *,
                     factor: float, query: str) -> Finding:
    """High-norm patch tokens draw the attention: in the images where the last block reads outlier
    patches, each receives at least ``OUTLIER_MIN_ATTENTION_RATIO`` × the attention of an other patch.

    Args:
        outliers: per image, the outlier patches the last block reads (the rule of
            :func:`generator.attention.token_norms.outlier_mask` on the second-to-last block's output).
        per_outlier, per_other: per image, the last block's head-averaged attention from ``query``
            received per outlier patch (NaN without outliers) and per other patch.
        factor: the outlier rule's factor, for the sentence.
        query: who attends, for the sentence ("the class token", "the mean patch query").

    Supported when outliers exist and the ratio of the means over the images with outliers reaches the
    threshold; contradicted when no image has an outlier or the ratio falls short; not testable
    without images or with non-finite numbers.
    """
    cid = "tokens_high_norm"
    counts = np.asarray(outliers, dtype=np.int64)
    n = len(counts)
    if n == 0 or len(per_outlier) != n or len(per_other) != n:
        return not_testable(cid, "norms and attention of at least one image are needed")
    has = counts > 0
    numbers: dict = {"images": n, "images_with_outliers": int(has.sum()), "factor": factor}
    thresholds = {"OUTLIER_MIN_ATTENTION_RATIO": OUTLIER_MIN_ATTENTION_RATIO}
    if not has.any():
        where = "the image" if n == 1 else f"any of the {n} images"
        return Finding(cid, "contradicted", f"No patch token entering the last block has a norm above {factor:g}× "
                       f"the median patch norm in {where}: this model shows no high-norm outlier tokens here.",
                       numbers, thresholds)
    on_outlier = _finite(np.asarray(per_outlier, dtype=np.float64)[has])
    on_other = _finite(np.asarray(per_other, dtype=np.float64)[has])
    if on_outlier is None or on_other is None:
        return not_testable(cid, "the attention to the outlier and to the other patches must be finite", numbers)
    x, y = float(on_outlier.mean()), float(on_other.mean())
    ratio = x / y if y > 0 else math.inf
    numbers |= {"mean_outliers": float(counts[has].mean()), "per_outlier": x, "per_other": y, "ratio": ratio}
    where = (f"In {int(has.sum())} of {_images(n)} the last block reads patch tokens whose norm exceeds {factor:g}× "
             f"the median patch norm ({counts[has].mean():.1f} such patches on average); each receives {x:.1%} of "
             f"{query}'s attention, against {y:.1%} for each other patch ({ratio:.1f}×")
    if ratio >= OUTLIER_MIN_ATTENTION_RATIO:
        return Finding(cid, "supported", f"{where}), as Darcet et al. describe for high-norm tokens.",
                       numbers, thresholds)
    return Finding(cid, "contradicted", f"{where}, at least {OUTLIER_MIN_ATTENTION_RATIO:g}× needed): the outlier "
                   f"tokens do not draw the attention here.", numbers, thresholds)


def registers_take_attention(shares: Sequence[float], *, registers: int, tokens: int, query: str) -> Finding:
    """Registers take attention: the last block's share of ``query``'s attention on the registers, mean
    over the images, is at least ``REGISTER_MIN_SHARE_RATIO`` × their share of the tokens.

    Args:
        shares: per image, the last block's head-averaged attention of ``query`` on the registers (summed).
        registers, tokens: register tokens and all tokens of the sequence.
        query: who attends, for the sentence.
    """
    cid = "tokens_register_attention"
    if registers == 0:
        return not_testable(cid, "the model has no register tokens")
    values = _finite(shares)
    if values is None:
        return not_testable(cid, "the registers' attention share of at least one image is needed")
    share, uniform = float(values.mean()), registers / tokens
    numbers = {"images": len(values), "share": share, "registers": registers, "tokens": tokens, "uniform": uniform}
    thresholds = {"REGISTER_MIN_SHARE_RATIO": REGISTER_MIN_SHARE_RATIO}
    where = (f"The {registers} registers take {share:.1%} of {query}'s attention in the last block (mean over "
             f"{_images(len(values))}); their share of the {tokens} tokens is {uniform:.1%}")
    if share >= REGISTER_MIN_SHARE_RATIO * uniform:
        return Finding(cid, "supported", f"{where}, so they draw {share / uniform:.1f}× that, as Darcet et al. "
                       f"report.", numbers, thresholds)
    return Finding(cid, "contradicted", f"{where}; at least {REGISTER_MIN_SHARE_RATIO:g}× that would count as "
                   f"drawing attention ({share / uniform:.1f}× here).", numbers, thresholds)


# ----------------------------------------------------------------------------- feeding from stats


def vit_findings(stats: VitAttentionStats) -> list[Finding]:
    """The ViT attention rules on image-averaged, head-averaged per-block numbers."""
    # NaN (one image: positional; no class token: CLS concentration) propagates to "not testable"
    per_block = {name: getattr(stats, name).mean(axis=(0, 2))
                 for name in ("mean_distance", "entropy", "positional", "cls_concentration")}
    similarity = stats.block_similarity.mean(axis=0)
    patches = stats.grid[0] * stats.grid[1]
    uniform_share = max(1, math.ceil(stats.top_fraction * patches - 1e-9)) / patches
    return [
        spatial_then_content(per_block["mean_distance"], per_block["positional"], stats.uniform_distance),
        growing_sparsity(per_block["entropy"]),
        later_blocks_alike(similarity),
        late_sparse_rows(per_block["cls_concentration"], uniform_share),
        not_testable("vit_early_columns", "no column-structure score is computed"),
    ]


def swin_findings(stats: SwinAttentionStats) -> list[Finding]:
    """The Swin rules over every head of every block (the study looked at one block of stage 3;
    a model with fewer stages is judged on all its heads)."""
    classes = [c for key in sorted(stats.blocks) for c in stats.blocks[key].classes]
    correlations = [float(v) for key in sorted(stats.blocks) for v in stats.blocks[key].bias_correlation.mean(axis=0)]
    return [swin_head_shapes(classes), bias_explains_attention(correlations)]


# ----------------------------------------------------------------------------- caveats from the data

#: A prediction whose top-1 probability is below this many times the uniform probability (1 / classes)
#: is near chance: the model does not recognise the image, and its explanations are labelled as such.
NEAR_CHANCE_FACTOR = 3.0
#: Position-only keys of an edit: two variants whose edits differ only in these differ only in placement.
POSITION_KEYS = frozenset({"anchor", "to", "dx", "dy", "offset", "position"})


@dataclass(frozen=True)
class Caveat:
    """A warning made from numbers by a rule (not a verdict on a study claim).

    Attributes:
        kind: "near_chance", "sanity_check" or "confounded_edit".
        sentence: the sentence shown beside the result it qualifies.
        numbers: the measured values; thresholds: the named thresholds used.
    """

    kind: str
    sentence: str
    numbers: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)


def near_chance(top_prob: float, num_classes: int) -> Caveat | None:
    """A caveat when the top-1 probability is below ``NEAR_CHANCE_FACTOR`` × 1 / ``num_classes``.

    Returns:
        None when the prediction is clear of chance (or the class count is unknown).
    """
    if not num_classes or num_classes < 2 or not math.isfinite(top_prob):
        return None
    uniform = 1.0 / num_classes
    limit = NEAR_CHANCE_FACTOR * uniform
    if top_prob >= limit:
        return None
    return Caveat("near_chance", f"Near chance: the top class has {top_prob:.1%}, below {NEAR_CHANCE_FACTOR:g}× the "
                  f"uniform {uniform:.1%} of {num_classes} classes ({limit:.1%}). The model does not recognise this "
                  f"image; the explanations below explain a guess.",
                  {"top_prob": top_prob, "num_classes": num_classes, "limit": limit},
                  {"NEAR_CHANCE_FACTOR": NEAR_CHANCE_FACTOR})


def sanity_check_failed(method: str, correlation: float, threshold: float, how: str = "") -> Caveat | None:
    """A caveat when a map barely changes after the model is randomised: |ρ| ≥ ``threshold``.

    The check is two-sided: a strong negative rank correlation also means the map follows the input
    or the architecture rather than the trained weights.

    Args:
        method: the map's title.
        correlation: Spearman ρ between the map and the map of the randomised model.
        threshold: the faithfulness section's ``flag_correlation``.
        how: what was randomised, for the sentence.
    """
    if not math.isfinite(correlation) or abs(correlation) < threshold:
        return None
    randomised = f" ({how})" if how else ""
    return Caveat("sanity_check", f"Sanity check failed: {method}'s map keeps a rank correlation of {correlation:.2f} "
                  f"with the map of the randomised model{randomised}; |ρ| ≥ {threshold:.2f} fails. It reflects the "
                  f"input or the architecture more than what this model learned.",
                  {"method": method, "correlation": correlation}, {"flag_correlation": threshold})


def edit_aspects(edits: Sequence[Mapping]) -> set[str]:
    """What a variant's edits change: "size", "position", "content" (erase, split, paste, other ops)."""
    out: set[str] = set()
    for edit in edits:
        op = edit.get("op")
        if op == "scale":
            if float(edit.get("factor", 0.5)) != 1.0:
                out.add("size")
            if edit.get("anchor", "center") not in ("center", "centre"):
                out.add("position")
        elif op == "move":
            out.add("position")
        else:
            out.add("content")
    return out


def position_only_pair(a: Sequence[Mapping], b: Sequence[Mapping]) -> bool:
    """True when two edit lists are the same except for position keys (and do differ in one)."""
    if len(a) != len(b):
        return False
    differs = False
    for x, y in zip(a, b):
        if x.get("op") != y.get("op"):
            return False
        for key in set(x) | set(y):
            if x.get(key) != y.get(key):
                if key not in POSITION_KEYS:
                    return False
                differs = True
    return differs


def edit_confounds(variants: Mapping[str, Sequence[Mapping]], original_top_prob: Mapping[str, float],
                   top_class: str) -> list[Caveat]:
    """Caveats for the location/size study: which variants change more than one thing, and which
    pair of variants isolates position.

    Args:
        variants: variant name → its declared edits (dicts with "op" and the op's keys).
        original_top_prob: variant name → probability (0–1) of the original's top class; the key
            "Original" holds the unedited image's.
        top_class: the original's top class, for the sentences.

    Returns:
        One caveat per variant that moves the object and also changes its size or content (the
        sentence gives the size-only variant's effect when there is one, showing the confound), and
        one per pair of variants that differ only in position (the clean location comparison).
    """
    out: list[Caveat] = []
    aspects = {name: edit_aspects(edits) for name, edits in variants.items()}
    before = original_top_prob.get("Original")
    size_only = [n for n, a in aspects.items() if a == {"size"}]
    for name, changed in aspects.items():
        if "position" not in changed or len(changed) < 2 or before is None:
            continue
        others = " and ".join(sorted(changed - {"position"}))
        numbers = {"variant": name, "changes": sorted(changed), "before": before, "after": original_top_prob.get(name)}
        sentence = (f"“{name}” changes the {others} as well as the position, so against the original it cannot "
                    f"isolate location.")
        for s in size_only:
            drop = before - original_top_prob.get(s, float("nan"))
            numbers[f"drop_{s}"] = drop
            if math.isfinite(drop) and drop >= EDIT_MIN_DROP:
                sentence += (f" The size change alone (“{s}”) already moves {top_class} from {before:.1%} to "
                             f"{original_top_prob[s]:.1%}.")
        out.append(Caveat("confounded_edit", sentence, numbers, {"EDIT_MIN_DROP": EDIT_MIN_DROP}))
    names = list(variants)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if position_only_pair(variants[a], variants[b]):
                pa, pb = original_top_prob.get(a), original_top_prob.get(b)
                if pa is None or pb is None:
                    continue
                out.append(Caveat("position_pair", f"“{a}” and “{b}” differ only in where the object sits: "
                                  f"{top_class} has {pa:.1%} in one and {pb:.1%} in the other, a difference of "
                                  f"{abs(pa - pb):.1%} that is due to placement alone.",
                                  {"a": a, "b": b, "p_a": pa, "p_b": pb}, {}))
    return out
