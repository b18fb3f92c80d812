"""Section: per-head attention grids for every ViT block."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import Field, Strict

from ..store.cache import Record
from ..data.images import ImageItem
from ..models.loaded import LoadedModel
from ..config.settings import SectionSettings
from .base import ModelInput, Section
from .common import prediction_meta, resolve_query

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class HeadsSettings(SectionSettings):
    """Per-head attention grids (the study's Figure 1), models with global attention rows."""

    #: Which query token's attention is drawn: "auto" (the class token where the model has one,
    #: else the mean over patch queries), "cls", "mean" (mean over patch queries), or an integer
    #: patch index (row-major over the patch grid).
    query: Union[Literal["auto", "cls", "mean"], Annotated[int, Strict(), Field(ge=0)]] = "auto"
    #: Colour scale shared per block row ("row") or stretched per panel ("panel").
    scale: Literal["row", "panel"] = "row"


class HeadsSection(Section):
    Settings = HeadsSettings
    name = "heads"
    title = "Attention heads"
    needs = frozenset({"attention-rows"})
    template = "sections/heads.md.j2"
    chapter = ("vit-attention", "ViT attention", "chapters/heads_intro.md.j2")

    def missing(self, model: LoadedModel) -> list[str]:
        """As :meth:`Section.missing`, and the class token when the query asks for it by name."""
        lacks = super().missing(model)
        if self.settings.query == "cls" and not model.has("class-token"):
            lacks.append("class-token")
        return lacks

    def compute(self, model: LoadedModel, image: ImageItem, inputs: ModelInput) -> Record:
        import torch

        from ..attention.capture import query_attention_maps

        layout = model.adapter.token_layout(model.module)
        query = resolve_query(self.settings.query, layout)
        with torch.inference_mode():
            logits, attn = model.adapter.attention(model.module, inputs.x[None].to(model.device))
            maps = query_attention_maps(attn, layout, query)[:, 0]  # blocks, heads, h, w
        return Record(
            section=self.name,
            model=model.name,
            image=image.slug,
            arrays={"maps": maps.float().cpu().numpy(), "view": inputs.view},
            meta={
                **prediction_meta(model, logits[0]),
                "query": query,
                "scale": self.settings.scale,
                "grid": list(layout.grid),
                "blocks": int(maps.shape[0]),
                "heads": int(maps.shape[1]),
                "left_out_tokens": list(layout.prefix_names),
            },
        )

    def render(self, record: Record) -> dict[str, Figure]:
        from ..render.heads import head_grid_figure

        meta = record.meta
        return {
            "": head_grid_figure(
                record.arrays["maps"],
                record.arrays["view"],
                scale=meta["scale"],
                title=f"{meta['model_display']}: attention per block and head",
                query_label=_query_label(meta["query"]),
            )
        }

    def caption(self, record: Record, figure_id: str = "") -> str:
        meta = record.meta
        scale = ("one colour scale per block row (colourbar at the right)" if meta["scale"] == "row"
                 else "each panel stretched to its own range")
        left_out = ", ".join(meta["left_out_tokens"]) or "none"
        return (f"{meta['model_display']}: attention of {_query_label(meta['query'])} to the "
                f"{meta['grid'][0]}×{meta['grid'][1]} patch grid, {meta['blocks']} blocks × {meta['heads']} heads; "
                f"{scale}. Prefix-token columns left out: {left_out}.")


def _query_label(query) -> str:
    if query == "cls":
        return "the CLS token"
    if query == "mean":
        return "the mean patch query"
    return f"patch {query}"
