"""Section: attention statistics over the whole image set, per model, and the findings they support.

Design: one job per model over the *image set* (``per_image = False``, one unit). The
positional score of a head is a correlation *across* images, so the statistics need every
image at once; the job's cache key holds the SHA-256 of every image file in the set (plus the
section's settings and the model), so adding, removing or editing any image recomputes it and
nothing else. The record keeps the per-image numbers (images × blocks × heads arrays), the
seeded bootstrap intervals, and the findings (:mod:`generator.analysis.findings`) made from them;
rendering draws those arrays and never recomputes.

Memory: the ViT's patch-to-patch attention of all images is held at once (blocks × images ×
heads × tokens², float32). That is small for the embedded models; an ImageNet ViT-B over
a hundred images would need about 2 GB.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from ..store.cache import Record
from ..models.loaded import LoadedModel
from ..config.settings import Float, Int, SectionSettings
from .base import Section

if TYPE_CHECKING:
    from matplotlib.figure import Figure

UNIT = "image set"


class StatsSettings(SectionSettings):
    """Attention statistics over the image set (distance, entropy, positional score, offset kernels)."""

    #: Bootstrap resamples of the images for each 95 % interval.
    bootstrap_samples: Int = Field(default=2000, ge=100)
    #: Seed of the bootstrap.
    seed: Int = 0
    #: Confidence of the intervals.
    confidence: Float = Field(default=0.95, gt=0, lt=1)
    #: Share of the patches whose CLS attention mass is measured (CLS concentration).
    top_fraction: Float = Field(default=0.1, gt=0, le=1)
    #: Images per forward pass for Swin (its statistics are per image; the ViT's need all images at once).
    batch_size: Int = Field(default=32, ge=1)


def _interval(values: np.ndarray, s: StatsSettings) -> dict:
    from ..analysis.bootstrap import bootstrap_interval

    iv = bootstrap_interval(values, n_boot=s.bootstrap_samples, seed=s.seed, confidence=s.confidence)
    return {"mean": _num(iv.mean), "low": _num(iv.low), "high": _num(iv.high)}


def _num(value):
    """JSON-able: floats rounded to 6 digits, NaN → None, arrays → nested lists."""
    if isinstance(value, np.ndarray):
        return [_num(v) for v in value.tolist()] if value.ndim else _num(float(value))
    if isinstance(value, (list, tuple)):
        return [_num(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6) if np.isfinite(value) else None
    return value


def _third(n: int) -> int:
    return max(1, n // 3)


class StatsSection(Section):
    """Per model: attention statistics of every block and head over the image set, with intervals."""

    Settings = StatsSettings
    name = "stats"
    needs = frozenset()
    needs_any = frozenset({"attention-rows", "windows"})
    title = "Attention statistics"
    template = "sections/stats.md.j2"
    chapter = ("attention-statistics", "Attention statistics", "chapters/stats_intro.md.j2")
    per_image = False

    def units(self) -> list[str]:
        """One unit, the whole image set; none when the folder holds no image files."""
        return [UNIT] if self._image_files() else []

    def _image_files(self) -> list:
        """The image files the statistics read: files whose header Pillow recognises (no decoding).

        A file that is not an image (reported by the image scan) does not change the statistics,
        so it does not change their cache key either.
        """
        from PIL import Image, UnidentifiedImageError

        from ..data.images import IMAGE_SUFFIXES

        folder = self.config.images
        if not folder.is_dir():
            return []
        readable = []
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                           and not p.is_symlink()):
            try:
                with Image.open(path):
                    readable.append(path)
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
                continue
        return readable

    def unit_params(self, unit: str) -> dict:
        """The SHA-256 of every image file of the set (raw bytes: no decoding at plan time)."""
        return {"images": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self._image_files()}}

    def compute_unit(self, model: LoadedModel, unit: str) -> Record:
        import torch

        from ..data.images import scan_images
        from ..data.inputs import prepare_input

        images, _ = scan_images(self.config.images)
        if not images:
            raise ValueError(f"no usable images in {self.config.images}")
        x = torch.stack([prepare_input(model, image).x for image in images])
        slugs = [image.slug for image in images]
        with torch.inference_mode():
            if model.has("windows"):
                return self._swin(model, x, slugs)
            return self._vit(model, x.to(model.device), slugs)

    # ------------------------------------------------------------------ ViT

    def _vit(self, model: LoadedModel, x, slugs: list[str]) -> Record:
        from ..attention.stats import vit_attention_stats
        from ..analysis.findings import vit_findings

        s = self.settings
        st = vit_attention_stats(model.module, x, top_fraction=s.top_fraction)
        fields = ("mean_distance", "mean_distance_px", "entropy", "positional", "cls_concentration")
        arrays = {name: getattr(st, name).astype(np.float32) for name in fields}
        arrays["block_similarity"] = st.block_similarity.astype(np.float32)
        summary = st.summary(n_boot=s.bootstrap_samples, seed=s.seed, confidence=s.confidence)
        for name, iv in summary.items():  # per block × head (similarity: per block pair)
            for part in ("mean", "low", "high"):
                arrays[f"{name}_{part}"] = getattr(iv, part).astype(np.float32)
        # per block, heads averaged, interval over images
        per_block = {name: _interval(getattr(st, name).mean(axis=2), s) for name in fields}
        per_block["block_similarity"] = _interval(st.block_similarity, s)
        t = _third(st.blocks)
        pairs = max(1, t - 1)
        head_mean = {name: getattr(st, name).mean(axis=2) for name in fields}  # images, blocks
        claim_numbers = {
            "vit_spatial_then_content": {
                "label": "late − early mean distance (patches)",
                **_interval(head_mean["mean_distance"][:, -t:].mean(1) - head_mean["mean_distance"][:, :t].mean(1), s)},
            "vit_growing_sparsity": {
                "label": "entropy, last − first block",
                **_interval(head_mean["entropy"][:, -1] - head_mean["entropy"][:, 0], s)},
            "vit_later_blocks_alike": {
                "label": "mean similarity of the last consecutive blocks",
                **_interval(st.block_similarity[:, -pairs:].mean(1), s)} if st.blocks > 1 else None,
            "vit_late_sparse_rows": {
                "label": "CLS share on its top patches, last third",
                **_interval(head_mean["cls_concentration"][:, -t:].mean(1), s)},
        }
        findings = vit_findings(st)
        meta = {
            "model_display": model.display_name, "random_weights": model.random_weights, "family": model.family,
            "images": slugs, "n_images": len(slugs), "grid": list(st.grid), "patch_size": list(st.patch_size),
            "uniform_distance": _num(st.uniform_distance), "top_fraction": st.top_fraction,
            "blocks": st.blocks, "heads": st.heads, "prefix_tokens": list(st.prefix_names),
            "bootstrap": {"samples": s.bootstrap_samples, "seed": s.seed, "confidence": s.confidence},
            "per_block": per_block, "claim_numbers": {k: v for k, v in claim_numbers.items() if v},
            "findings": [asdict(f) for f in findings],
        }
        return Record(section=self.name, model=model.name, image="image-set", arrays=arrays, meta=_jsonable(meta))

    # ------------------------------------------------------------------ Swin

    def _swin(self, model: LoadedModel, x, slugs: list[str]) -> Record:
        from ..attention.stats import swin_attention_stats
        from ..analysis.findings import swin_findings

        s = self.settings
        parts = [swin_attention_stats(model.module, x[i:i + s.batch_size].to(model.device))
                 for i in range(0, len(x), s.batch_size)]
        st = parts[0] if len(parts) == 1 else _concat_swin(parts)
        arrays, blocks = {}, []
        for (stage0, block0), b in sorted(st.blocks.items()):
            stage, block = stage0 + 1, block0 + 1  # counted from 1 on pages, as in [sections.swin] targets
            key = f"s{stage}b{block}"
            arrays[f"{key}_kernels"] = b.mean_kernel.astype(np.float32)
            for name in ("mean_distance", "mean_distance_px", "entropy", "bias_correlation"):
                arrays[f"{key}_{name}"] = getattr(b, name).astype(np.float32)
            blocks.append({
                "stage": stage, "block": block, "key": key, "heads": int(b.mean_distance.shape[1]),
                "window": list(b.geometry.window), "grid": list(b.geometry.grid), "shifted": b.geometry.shifted,
                "pixel_spacing": list(b.pixel_spacing), "classes": list(b.classes),
                "measures": [asdict(m) for m in b.measures],
                "distance_px": _interval(b.mean_distance_px.mean(1), s), "distance": _interval(b.mean_distance.mean(1), s),
                "entropy": _interval(b.entropy.mean(1), s), "bias_correlation": _interval(b.bias_correlation.mean(1), s),
            })
        ordered = [b for _, b in sorted(st.blocks.items())]
        bias_median = np.median(np.concatenate([b.bias_correlation for b in ordered], axis=1), axis=1)  # images
        classes = [c for b in blocks for c in b["classes"]]
        findings = swin_findings(st)
        claim_numbers = {
            "swin_head_shapes": {"label": "heads: vertical / horizontal / ring / local / mixed",
                                 "count": {c: classes.count(c) for c in ("vertical", "horizontal", "ring", "local", "mixed")},
                                 "heads": len(classes)},
            "swin_position_bias": {"label": "median over heads of corr(attention, softmax(bias))",
                                   **_interval(bias_median, s)},
        }
        meta = {
            "model_display": model.display_name, "random_weights": model.random_weights, "family": model.family,
            "images": slugs, "n_images": len(slugs), "blocks": blocks,
            "stages": sorted({b["stage"] for b in blocks}),
            "bootstrap": {"samples": s.bootstrap_samples, "seed": s.seed, "confidence": s.confidence},
            "claim_numbers": claim_numbers, "findings": [asdict(f) for f in findings],
        }
        return Record(section=self.name, model=model.name, image="image-set", arrays=arrays, meta=_jsonable(meta))

    # ------------------------------------------------------------------ render

    def render(self, record: Record) -> dict[str, Figure]:
        from ..render import stats as draw

        m, a = record.meta, record.arrays
        name = m["model_display"]
        if "stages" not in m:  # global attention rows (a ViT); else windows by stage
            figures = {
                "": draw.mean_distance_figure(a["mean_distance_mean"], low=a["mean_distance_low"],
                                              high=a["mean_distance_high"], pixels_per_patch=m["patch_size"][0],
                                              uniform_distance=m["uniform_distance"],
                                              title=f"{name}: mean attention distance"),
                "entropy": draw.entropy_figure(a["entropy_mean"], low=a["entropy_low"], high=a["entropy_high"],
                                               title=f"{name}: attention entropy"),
            }
            if m["n_images"] > 1:
                figures["positional"] = draw.positional_map_figure(a["positional_mean"],
                                                                   title=f"{name}: how positional each head is")
            if m["blocks"] > 1:
                figures["similarity"] = draw.block_similarity_figure(
                    a["block_similarity_mean"], low=a["block_similarity_low"], high=a["block_similarity_high"],
                    title=f"{name}: similarity of consecutive blocks")
            return figures
        figures = {}
        for stage in m["stages"]:
            blocks = [b for b in m["blocks"] if b["stage"] == stage]
            by_heads = {b["heads"] for b in blocks}
            if len(by_heads) != 1:
                continue
            kernels = np.stack([a[f"{b['key']}_kernels"] for b in blocks])
            figures[f"kernels-s{stage}"] = draw.swin_kernels_figure(
                kernels, [b["classes"] for b in blocks], stage=stage, first_block=blocks[0]["block"],
                title=f"{name}, stage {stage}: mean attention by offset")
        return figures

    def caption(self, record: Record, figure_id: str = "") -> str:
        m = record.meta
        n = f"{m['n_images']} image{'s' if m['n_images'] != 1 else ''}"
        boot = f"{100 * m['bootstrap']['confidence']:.0f} % bootstrap intervals over images (seed {m['bootstrap']['seed']})"
        if figure_id == "":
            return (f"{m['model_display']}: mean attention distance of each head by block, patch-to-patch, averaged "
                    f"over {n}, with {boot}; dashed: uniform attention over the {m['grid'][0]}×{m['grid'][1]} grid.")
        if figure_id == "entropy":
            return (f"{m['model_display']}: normalised entropy of each head's attention rows (1 = uniform, 0 = one "
                    f"patch), by block, averaged over {n}, with {boot}.")
        if figure_id == "positional":
            return (f"{m['model_display']}: positional score of each head (mean correlation of its attention matrix "
                    f"between different images; 1 = the same on every image), over {n}.")
        if figure_id == "similarity":
            return (f"{m['model_display']}: Pearson correlation of consecutive blocks' head-averaged attention "
                    f"matrices, mean over {n} and {boot}.")
        if figure_id.startswith("kernels-s"):
            return (f"{m['model_display']}, stage {figure_id[9:]}: each head's mean attention weight by offset "
                    f"(key − query) inside windows, divided by the uniform weight, over {n}; titles give the shape "
                    f"class of each head.")
        return self.title

    def page_extras(self, results) -> dict:
        """Per model: the per-block table with intervals (the chapter's tables)."""
        import pandas as pd

        tables = {}
        for r in results:
            m = r.meta
            rows = []
            if "stages" not in m:
                pb = m["per_block"]
                for b in range(m["blocks"]):
                    row = {"Block": b}
                    for name, label, fmt in (("mean_distance", "Distance (patches)", "{:.2f}"),
                                             ("entropy", "Entropy", "{:.3f}"),
                                             ("positional", "Positional score", "{:.3f}"),
                                             ("cls_concentration", "CLS top-share", "{:.3f}")):
                        row[label] = _fmt_interval(pb[name], b, fmt)
                    row["Similarity to next"] = _fmt_interval(pb["block_similarity"], b, "{:.3f}") \
                        if b < m["blocks"] - 1 else ""
                    rows.append(row)
            else:
                for b in m["blocks"]:
                    counts = {c: b["classes"].count(c) for c in dict.fromkeys(b["classes"])}
                    rows.append({"Stage": b["stage"], "Block": b["block"], "Shifted": "yes" if b["shifted"] else "no",
                                 "Heads": b["heads"],
                                 "Distance (px)": _fmt_interval(b["distance_px"], None, "{:.2f}"),
                                 "Entropy": _fmt_interval(b["entropy"], None, "{:.3f}"),
                                 "Bias-only corr.": _fmt_interval(b["bias_correlation"], None, "{:.3f}"),
                                 "Head shapes": ", ".join(f"{v} {k}" for k, v in counts.items())})
            tables[r.model] = pd.DataFrame(rows)
        return {"tables": tables}


def _fmt_interval(iv: dict, index, fmt: str) -> str:
    pick = (lambda v: v) if index is None else (lambda v: v[index])
    mean, low, high = pick(iv["mean"]), pick(iv["low"]), pick(iv["high"])
    if mean is None:
        return "n/a"
    text = fmt.format(mean)
    if low is not None and high is not None and high > low:
        text += f" [{fmt.format(low)}, {fmt.format(high)}]"
    return text


def _concat_swin(parts):
    """Join per-batch Swin statistics along the image axis (every field is per image)."""
    from dataclasses import replace

    from ..attention.stats import SwinAttentionStats

    out = {}
    for key in parts[0].blocks:
        first = parts[0].blocks[key]
        out[key] = replace(first, **{name: np.concatenate([p.blocks[key].__dict__[name] for p in parts])
                                     for name in ("mean_distance", "mean_distance_px", "entropy", "kernels",
                                                  "bias_correlation")})
    return SwinAttentionStats(blocks=out)


def _jsonable(value):
    """Meta as plain JSON types: NaN → None, numpy scalars → Python numbers, tuples → lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6) if np.isfinite(value) else None
    return value
