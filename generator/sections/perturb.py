"""Section: location and size perturbations: declared image edits and their top-k tables."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import Field

from ..cache import Record
from ..images import ImageItem, load_image
from ..loaded_model import LoadedModel
from ..perturb import EditError, Variant, apply_variant, load_variants, parse_variants, prediction_table
from ..safepaths import PathError, confined
from ..settings import ConfigError, Int, SectionSettings, Str
from .base import ModelInput, Section

if TYPE_CHECKING:
    from matplotlib.figure import Figure

THUMBNAIL = 160


def _inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` when it stays inside ``root`` (else None: the compute step reports it)."""
    try:
        return confined(root, relative, "path")
    except PathError:
        return None


class PerturbSettings(SectionSettings):
    """Location and size perturbations (the study's Figure 6 and Table I), every model."""

    #: Classes listed per variant.
    top_k: Int = Field(default=3, ge=1)
    #: Variants declared here, by image file name: {"cat.png" = [{name = "...", edit = [{op = "move", ...}]}]}.
    #: Files ``<image>.variants.toml`` and ``<image>.variants/*.png`` next to an image add more.
    variants: dict[Str, Any] = {}


class PerturbSection(Section):
    Settings = PerturbSettings

    @classmethod
    def check_config(cls, config, source) -> None:
        base = source.parent if source is not None else Path.cwd()
        for file_name, declared in config.sections.perturb.variants.items():
            key = f"sections.perturb.variants.{file_name}"
            if not (config.images / file_name).is_file():
                raise ConfigError(source, key, f"no image {file_name!r} in {config.images}")
            try:
                parse_variants(declared, "declaration", base)
            except EditError as exc:
                raise ConfigError(source, key, str(exc).removeprefix("declaration: ")) from None
    name = "perturb"
    title = "Location and size"
    families = ("vit", "swin")
    template = "sections/perturb.md.j2"
    chapter = ("location-and-size", "Location and size", "chapters/perturb_intro.md.j2")

    def variants(self, image: ImageItem) -> list[Variant]:
        declared = self.settings.variants.get(image.name, [])
        base = self.config.source.parent if self.config.source else None
        return parse_variants(declared, "config", base) + load_variants(image.path)

    def applies_to_image(self, image: ImageItem) -> bool:
        return bool(self.variants(image))

    def image_params(self, image: ImageItem) -> dict:
        digest = hashlib.sha256()
        for variant in self.variants(image):
            digest.update(repr((variant.name, variant.edits)).encode())
            paths = [variant.file] if variant.file else []
            for edit in variant.edits:
                for key in ("mask", "source"):
                    if key in edit:
                        root = variant.base_dir if key == "mask" else image.path.parent
                        paths.append(_inside(root, edit[key]) if root else None)
            for path in paths:
                if path is not None and path.is_file():
                    digest.update(path.read_bytes())
        return {"variants_sha256": digest.hexdigest()}

    def compute(self, model: LoadedModel, image: ImageItem, inputs: ModelInput) -> Record:
        import torch

        from ..models import preprocess

        variants = self.variants(image)
        sources = {}
        for variant in variants:
            for edit in variant.edits:
                if edit.get("op") == "paste" and edit.get("source") not in sources:
                    sources[edit["source"]] = load_image(confined(image.path.parent, edit["source"], "paste source"))[0]
        edited = [(v.name, apply_variant(image.rgb, v, sources)) for v in variants]
        names = ["Original"] + [name for name, _ in edited]
        pictures = [image.rgb] + [result.image for _, result in edited]
        batch = torch.stack([preprocess(model, p)[1] for p in pictures]).to(model.device)
        with torch.inference_mode():
            probs = model.module(batch).float().softmax(-1).cpu().double().numpy()
        table = prediction_table(names, probs, model.class_names, k=self.settings.top_k)
        thumbs = np.stack([_thumbnail(p) for p in pictures])
        top1 = int(np.argmax(probs[0]))
        return Record(
            section=self.name, model=model.name, image=image.slug,
            arrays={"thumbnails": thumbs, "probs": probs.astype(np.float32)},
            meta={"model_display": model.display_name, "random_weights": model.random_weights,
                  "variants": names, "notes": {name: r.notes for name, r in edited},
                  "original_top1": model.class_names[top1], "original_top1_index": top1,
                  "table": table.to_dict(orient="records"),
                  "top": [{"index": top1, "label": model.class_names[top1], "prob": round(float(probs[0, top1]), 6)}]},
        )

    def tables(self, record: Record) -> dict[str, pd.DataFrame]:
        return {"": pd.DataFrame(record.meta["table"])}  # beside the figure: figures/perturb/<model>/<image>.csv

    def render(self, record: Record) -> dict[str, Figure]:
        from ..render.perturb import variant_figure

        m, a = record.meta, record.arrays
        probs = a["probs"][:, m["original_top1_index"]]
        return {"": variant_figure(list(a["thumbnails"]), m["variants"], probs, m["original_top1"],
                                   f"{m['model_display']}: edits and P({m['original_top1']})")}

    def caption(self, record: Record, figure_id: str = "") -> str:
        m = record.meta
        return (f"{m['model_display']}: the variants ({', '.join(m['variants'])}) and the probability of the original's "
                f"top-1 class, {m['original_top1']}, in each.")

    def page_extras(self, results) -> dict:
        from dataclasses import asdict

        from ..caveats import perturb_caveats

        images = {i.slug: i for i in self.build.images} if self.build is not None else {}
        confounds = {r.model: [asdict(c) for c in perturb_caveats(
                         {v.name: list(v.edits) for v in self.variants(images[r.image])}, r.meta)]
                     for r in results if r.image in images}
        return {"tables": {r.model: pd.DataFrame(r.meta["table"]) for r in results}, "confounds": confounds}


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    """Fit into THUMBNAIL×THUMBNAIL (nearest for tiny images), padded to a square with white."""
    image = Image.fromarray(rgb)
    scale = THUMBNAIL / max(image.size)
    resample = Image.Resampling.NEAREST if scale > 2 else Image.Resampling.LANCZOS
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    canvas = Image.new("RGB", (THUMBNAIL, THUMBNAIL), (255, 255, 255))
    canvas.paste(image, ((THUMBNAIL - image.width) // 2, (THUMBNAIL - image.height) // 2))
    return np.asarray(canvas)
