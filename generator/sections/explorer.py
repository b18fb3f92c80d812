"""Section: the interactive attention explorer (click any patch, see where it looks, every block and head)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import Field, Strict

from ..store.cache import Record
from ..data.images import ImageItem
from ..models.loaded import LoadedModel
from ..config.settings import SectionSettings, Str
from .base import ModelInput, Section

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class ExplorerSettings(SectionSettings):
    """What the explorer exports (attention per block as compact binary, loaded on demand by the page)."""

    #: Keep only each query's k largest keys (smaller exports for big galleries); unset: every key.
    top_k: Annotated[int, Strict(), Field(ge=1)] | None = None
    #: Export only these image files (names in the image folder); empty: every image.
    images: tuple[Str, ...] = ()


class ExplorerSection(Section):
    """Per image × model: every block's attention, exported for the explorer (generator/site/assets/explorer.js)."""

    name = "explorer"
    needs = frozenset()
    needs_any = frozenset({"attention-rows", "windows"})
    title = "Attention explorer"
    template = "sections/explorer.md.j2"
    chapter = ("attention-explorer", "Attention explorer", "chapters/explorer_intro.md.j2")
    Settings = ExplorerSettings

    def applies_to_image(self, image: ImageItem) -> bool:
        return not self.settings.images or image.name in self.settings.images

    def params(self) -> dict[str, Any]:
        values = super().params()
        values.pop("images", None)  # which images are exported does not change one image's export
        return values

    def compute(self, model: LoadedModel, image: ImageItem, inputs: ModelInput) -> Record:
        from ..attention.explorer import swin_explorer_data, vit_explorer_data

        capture = swin_explorer_data if model.has("windows") else vit_explorer_data
        data = capture(model.module, inputs.x[None].to(model.device))
        arrays = {"view": inputs.view}
        blocks = []
        for b, block in enumerate(data.blocks):
            arrays[f"attn_{b}"] = block.attn.astype(np.float32)
            blocks.append({"grid": list(block.grid), "stage": block.stage, "index_in_stage": block.index_in_stage,
                           "window": list(block.window) if block.window else None,
                           "shift": list(block.shift) if block.shift else None})
        meta = {"model_display": model.display_name, "family": data.family, "blocks": blocks,
                "prefix_names": list(data.prefix_names), "image_size": list(data.image_size),
                "patch_size": list(data.patch_size), "top_k": self.settings.top_k}
        return Record(section=self.name, model=model.name, image=image.slug, arrays=arrays, meta=meta)

    def write_outputs(self, docs_dir: Path, model_slug: str, record: Record) -> dict[str, Any]:
        """Write the explorer's files under ``explorer/<model>/<image>/`` (the job's own slugs)."""
        from ..attention.explorer import ExplorerBlock, ExplorerData
        from ..site.explorer import write_explorer

        m = record.meta
        blocks = tuple(ExplorerBlock(attn=record.arrays[f"attn_{b}"], grid=tuple(blk["grid"]), stage=blk["stage"],
                                     index_in_stage=blk["index_in_stage"],
                                     window=tuple(blk["window"]) if blk["window"] else None,
                                     shift=tuple(blk["shift"]) if blk["shift"] else None)
                       for b, blk in enumerate(m["blocks"]))
        data = ExplorerData(family=m["family"], blocks=blocks, prefix_names=tuple(m["prefix_names"]),
                            image_size=tuple(m["image_size"]), patch_size=tuple(m["patch_size"]))
        page = write_explorer(docs_dir, record.image, model_slug, data, record.arrays["view"], top_k=m["top_k"])
        return {"manifest": page.manifest, "key": page.key, "first_load_bytes": page.first_load_bytes,
                "total_bytes": page.total_bytes, "files": {f"{page.folder}/{n}": size for n, size in page.files.items()}}

    def render(self, record: Record) -> dict[str, Figure]:
        return {}

    def page_extras(self, results) -> dict:
        return {"explorers": [{"manifest": r.outputs["manifest"], "key": r.outputs["key"],
                               "label": r.meta["model_display"]} for r in results if r.outputs.get("manifest")]}
