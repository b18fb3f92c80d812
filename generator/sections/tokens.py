"""Section: registers and artifact tokens (Darcet et al. 2024): the norm of every output token in
every block, the high-norm outlier patches by a stated rule, and the attention outliers and
register tokens receive.

Needs only global attention rows: a model without a class token is measured from the mean patch
query, and a headless one has no prediction line. Off by default (``enabled = false``); the
numbers come from one forward pass per image through the family adapter
(:meth:`~generator.families.ModelFamily.attention_and_outputs`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from ..store.cache import Record
from ..data.images import ImageItem
from ..models.loaded import LoadedModel
from ..config.settings import Bool, Float, Int, SectionSettings
from .base import ModelInput, Section
from .common import prediction_meta
from .stats import _jsonable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The queries whose attention is measured, in the words of the pages.
QUERY_WORDS = {"cls": "the class token", "patches": "the mean patch query"}


class TokensSettings(SectionSettings):
    """Registers and artifact tokens: output-token norms, high-norm outlier patches, register attention."""

    #: Off unless asked for: the default gallery's models have no registers, and the tests' builds stay short.
    enabled: Bool = False
    #: The outlier rule: a patch token whose output norm exceeds this many times the median patch norm
    #: of its block and image. Darcet et al. see artifact norms several times the typical norm.
    outlier_factor: Float = Field(default=4.0, gt=1.0)
    #: The last blocks whose token-norm maps are drawn.
    map_blocks: Int = Field(default=4, ge=1)


class TokensSection(Section):
    """Per model × image: token norms by block, outlier patches, attention to outliers and registers."""

    Settings = TokensSettings
    name = "tokens"
    title = "Registers and artifact tokens"
    needs = frozenset({"attention-rows"})
    template = "sections/tokens.md.j2"
    chapter = ("registers-and-artifact-tokens", "Registers and artifact tokens", "chapters/tokens_intro.md.j2")

    def compute(self, model: LoadedModel, image: ImageItem, inputs: ModelInput) -> Record:
        import torch

        from ..attention.token_norms import token_stats

        s = self.settings
        layout = model.adapter.token_layout(model.module)
        with torch.inference_mode():
            logits, attn, tokens = model.adapter.attention_and_outputs(model.module, inputs.x[None].to(model.device))
        st = token_stats(tokens, attn, layout, s.outlier_factor)
        blocks, (h, w) = st.norms.shape[0], layout.grid
        meta = {
            **(prediction_meta(model, logits[0]) if model.has("classifier-head") else
               {"model_display": model.display_name, "random_weights": model.random_weights}),
            "outlier_factor": s.outlier_factor, "map_blocks": min(s.map_blocks, blocks), "blocks": blocks,
            "grid": [h, w], "prefix_tokens": list(layout.prefix_names), "registers": layout.register_count,
            "tokens": layout.num_tokens, "query": "cls" if "cls" in st.attention else "patches",
            "per_block": _per_block(st, layout),
            "outlier_positions": [[[int(i // w), int(i % w)] for i in np.flatnonzero(st.outliers[b, 0])]
                                  for b in range(blocks)],
        }
        meta = _jsonable(meta)  # NaN → None: the rules then read the numbers as the chapter does
        meta["findings"] = [asdict(f) for f in _model_findings([meta])]
        arrays = {"view": inputs.view, "norms": st.norms[:, 0].astype(np.float32),
                  "outliers": st.outliers[:, 0].reshape(blocks, h, w)}
        return Record(section=self.name, model=model.name, image=image.slug, arrays=arrays, meta=_jsonable(meta))

    def tables(self, record: Record):
        """The per-block numbers (the data JSON's ``per_block``) as one table."""
        import pandas as pd

        return {"": pd.DataFrame(record.meta["per_block"])}

    def render(self, record: Record) -> dict[str, Figure]:
        from ..render.tokens import norm_maps_figure, shares_figure

        m, a = record.meta, record.arrays
        p, (h, w), shown = len(m["prefix_tokens"]), m["grid"], m["map_blocks"]
        patch_norms = a["norms"][-shown:, p:].reshape(shown, h, w)
        median = np.asarray([row["median_patch_norm"] for row in m["per_block"][-shown:]], dtype=np.float64)
        return {
            "": norm_maps_figure(a["view"], patch_norms / median[:, None, None], a["outliers"][-shown:],
                                 first_block=m["blocks"] - shown, factor=m["outlier_factor"],
                                 title=f"{m['model_display']}: output-token norms of the last blocks"),
            "shares": shares_figure(_share_lines(m), uniform=m["registers"] / m["tokens"] if m["registers"] else None,
                                    title=f"{m['model_display']}: attention on outliers"
                                          + (" and registers" if m["registers"] else "")),
        }

    def caption(self, record: Record, figure_id: str = "") -> str:
        m = record.meta
        if figure_id == "shares":
            registers = (f" and to the {m['registers']} register token{'s' if m['registers'] != 1 else ''} (dotted: "
                         f"their share of the tokens)" if m["registers"] else " (the model has no register tokens)")
            queries = " and ".join(QUERY_WORDS[q] for q in (("cls", "patches") if m["query"] == "cls" else ("patches",)))
            return (f"{m['model_display']}: share of each block's head-averaged attention that goes to the outlier "
                    f"patches of its input (the previous block's output){registers}, from {queries}; none in "
                    f"block 0, whose input is not measured.")
        return (f"{m['model_display']}: L2 norm of every patch token at the output of the last {m['map_blocks']} "
                f"blocks, divided by that block's median patch norm, on the {m['grid'][0]}×{m['grid'][1]} grid; "
                f"outlined: outliers (above {m['outlier_factor']:g}× the median).")

    def page_extras(self, results) -> dict:
        """Per model: the per-block table."""
        import pandas as pd

        return {"tables": {r.model: pd.DataFrame(_table_rows(r.meta)) for r in results}}

    def chapter_extras(self, results) -> dict:
        """The outlier rule, the claims tested and, per model, the rules' verdicts over every image."""
        from ..analysis.findings import token_claims

        if not results:
            return {}
        by_model: dict[str, list] = {}
        for r in results:
            by_model.setdefault(r.meta["model_display"], []).append(r.meta)
        return {"factor": results[0].meta["outlier_factor"], "claims": [asdict(c) for c in token_claims()],
                "models": {name: [asdict(f) for f in _model_findings(metas)] for name, metas in by_model.items()}}


def _per_block(st, layout) -> list[dict]:
    """One row per block: norms of its output; its attention to its input's outliers and to the registers."""
    p, cls = layout.num_prefix_tokens, layout.class_token_index
    registers = [i for i, name in enumerate(layout.prefix_names) if name.startswith("REG")]
    rows = []
    for b in range(st.norms.shape[0]):
        norms = st.norms[b, 0]
        row = {"block": b, "median_patch_norm": st.median_patch_norm[b, 0],
               "max_patch_norm": norms[p:].max(), "outliers": int(st.outliers[b, 0].sum())}
        if cls is not None:
            row["cls_norm"] = norms[cls]
        if registers:
            row["register_norm"] = norms[registers].mean()
        for query, values in st.attention.items():
            for key, v in values.items():
                row[f"{query}_{key}"] = v[b, 0]
        for query, share in st.register_share.items():
            row[f"{query}_register_share"] = share[b, 0]
        rows.append(row)
    return rows


def _share_lines(meta: dict) -> dict[str, dict[str, list]]:
    """Target ("outliers", "registers") → query in words → per-block share, for what the model has."""
    rows, lines = meta["per_block"], {"outliers": {}, "registers": {}}
    for query in ("cls", "patches"):
        if f"{query}_total" in rows[0]:
            lines["outliers"][QUERY_WORDS[query]] = [r[f"{query}_total"] for r in rows]
        if f"{query}_register_share" in rows[0]:
            lines["registers"][QUERY_WORDS[query]] = [r[f"{query}_register_share"] for r in rows]
    return {target: by_query for target, by_query in lines.items() if by_query}


def _table_rows(meta: dict) -> list[dict]:
    """The per-block rows in words (attention in %, n/a where not measured)."""
    query = meta["query"]

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"

    rows = []
    for r in meta["per_block"]:
        row = {"Block": r["block"], "Median patch norm": f"{r['median_patch_norm']:.2f}",
               "Max patch norm": f"{r['max_patch_norm']:.2f}", "Outlier patches": r["outliers"],
               f"Per outlier of the input ({QUERY_WORDS[query]})": pct(r[f"{query}_per_outlier"]),
               f"Per other patch ({QUERY_WORDS[query]})": pct(r[f"{query}_per_other"])}
        if meta["registers"]:
            row[f"On registers ({QUERY_WORDS[query]})"] = pct(r[f"{query}_register_share"])
        rows.append(row)
    return rows


def _model_findings(metas: list[dict]) -> list:
    """The two rules over every image of one model (the last block's numbers of each image)."""
    from ..analysis.findings import high_norm_tokens, registers_take_attention

    first = metas[0]
    query, words = first["query"], QUERY_WORDS[first["query"]]
    last = [m["per_block"][-1] for m in metas]

    def column(key: str) -> list[float]:  # None (not measured) → NaN, as the rules read it
        return [float("nan") if r[key] is None else r[key] for r in last]

    read = [m["per_block"][-2]["outliers"] if m["blocks"] > 1 else 0 for m in metas]
    return [high_norm_tokens(read, column(f"{query}_per_outlier"), column(f"{query}_per_other"),
                             factor=first["outlier_factor"], query=words),
            registers_take_attention(column(f"{query}_register_share") if first["registers"] else [],
                                     registers=first["registers"], tokens=first["tokens"], query=words)]
