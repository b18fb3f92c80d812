"""Section: location and size perturbations: declared image edits and their top-k tables.

Every variant is shown twice: the photo with the model's input (its resized centre crop) marked,
and the model's input itself. Each variant's table row says how much of its edited region lies
outside that input; above :data:`OUTSIDE_WARNING` the page warns that the variant tests cropping
as much as the edit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import Field

from ..store.cache import Record
from ..data.images import ImageItem, load_image
from ..models.loaded import LoadedModel
from ..analysis.perturb import EditError, Variant, apply_variant, load_variants, parse_variants, prediction_table
from ..store.safepaths import PathError, confined
from ..config.settings import ConfigError, Int, SectionSettings, Str
from .base import ModelInput, Section

if TYPE_CHECKING:
    from matplotlib.figure import Figure

THUMBNAIL = 160
#: Share of an edited region outside the model's input above which the page warns.
OUTSIDE_WARNING = 0.10


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
    template = "sections/perturb.md.j2"
    chapter = ("location-and-size", "Location and size", "chapters/perturb_intro.md.j2")
    version = 2  # 2: the model's input frame, views and the share of each edit outside it

    def variants(self, image: ImageItem) -> list[Variant]:
        declared = self.settings.variants.get(image.name, [])
        base = self.config.source.parent if self.config.source else None
        return parse_variants(declared, "config", base) + load_variants(image.path)

    def applies_to_image(self, image: ImageItem) -> bool:
        return bool(self.variants(image))

    def image_params(self, image: ImageItem) -> dict:
        digest = hashlib.sha256()
        for variant in self.variants(image):
            digest.update(repr((variant.name, variant.edits, variant.space)).encode())
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
        from timm.data import create_transform

        from ..data.input_frame import UnknownTransform, input_frame, outside_fraction
        from ..models.loading import preprocess

        height, width = image.rgb.shape[:2]
        try:
            frame = input_frame(create_transform(**model.data_config, is_training=False).transforms, (width, height))
        except UnknownTransform:
            frame = None  # the figure then shows no crop, and the table no share outside
        variants = self.variants(image)
        sources = {}
        for variant in variants:
            for edit in variant.edits:
                if edit.get("op") == "paste" and edit.get("source") not in sources:
                    sources[edit["source"]] = load_image(confined(image.path.parent, edit["source"], "paste source"))[0]
        edited = [(v.name, apply_variant(image.rgb, v, sources, frame)) for v in variants]
        names = ["Original"] + [name for name, _ in edited]
        pictures = [image.rgb] + [result.image for _, result in edited]
        prepared = [preprocess(model, p) for p in pictures]
        batch = torch.stack([x for _, x in prepared]).to(model.device)
        with torch.inference_mode():
            probs = model.module(batch).float().softmax(-1).cpu().double().numpy()
        table = prediction_table(names, probs, model.class_names, k=self.settings.top_k)
        outside: list[float | None] = [None] + [
            None if frame is None else round(outside_fraction(r.footprint, r.lost, frame), 4) for _, r in edited]
        table["Outside input %"] = ["" if share is None else round(100.0 * share, 1) for share in outside]
        warnings = [f"{name}: {100 * share:.0f} % of the edited region lies outside the {frame.input_size[0]}×"
                    f"{frame.input_size[1]} input {model.name} sees, so this variant tests cropping as much as "
                    "the edit itself." for name, share in zip(names, outside) if share is not None and share > OUTSIDE_WARNING]
        thumbs = np.stack([_thumbnail(p) for p in pictures])
        views = np.stack([_thumbnail(view) for view, _ in prepared])
        top1 = int(np.argmax(probs[0]))
        return Record(
            section=self.name, model=model.name, image=image.slug,
            arrays={"thumbnails": thumbs, "views": views, "probs": probs.astype(np.float32)},
            meta={"model_display": model.display_name, "random_weights": model.random_weights,
                  "variants": names, "notes": {name: r.notes for name, r in edited},
                  "original_top1": model.class_names[top1], "original_top1_index": top1,
                  "table": table.to_dict(orient="records"),
                  "input_frame": frame.as_dict() if frame else None,
                  "input_box_thumb": _thumb_box(frame.box, (width, height)) if frame else None,
                  "edit_boxes_thumb": [None] + [_footprint_box(r.footprint, (width, height)) for _, r in edited],
                  "outside": outside, "outside_warning": OUTSIDE_WARNING, "warnings": warnings,
                  "top": [{"index": top1, "label": model.class_names[top1], "prob": round(float(probs[0, top1]), 6)}]},
        )

    def tables(self, record: Record) -> dict[str, pd.DataFrame]:
        return {"": pd.DataFrame(record.meta["table"])}  # beside the figure: figures/perturb/<model>/<image>.csv

    def render(self, record: Record) -> dict[str, Figure]:
        from ..render.perturb import variant_figure

        m, a = record.meta, record.arrays
        probs = a["probs"][:, m["original_top1_index"]]
        return {"": variant_figure(list(a["thumbnails"]), list(a["views"]), m["variants"], probs, m["original_top1"],
                                   f"{m['model_display']}: edits and P({m['original_top1']})",
                                   input_box=m["input_box_thumb"], edit_boxes=m["edit_boxes_thumb"],
                                   outside=m["outside"], warn_above=m["outside_warning"])}

    def caption(self, record: Record, figure_id: str = "") -> str:
        m = record.meta
        crop = (" Top row: each variant with the model's input marked (dashed) and the edited region's extent "
                "(solid), and the share of that region outside the input; bottom row: the input the model sees."
                if m["input_box_thumb"] else "")
        return (f"{m['model_display']}: the variants ({', '.join(m['variants'])}) and the probability of the original's "
                f"top-1 class, {m['original_top1']}, in each.{crop}")

    def page_extras(self, results) -> dict:
        from dataclasses import asdict

        from ..analysis.caveats import perturb_caveats

        images = {i.slug: i for i in self.build.images} if self.build is not None else {}
        confounds = {r.model: [asdict(c) for c in perturb_caveats(
                         {v.name: list(v.edits) for v in self.variants(images[r.image])}, r.meta)]
                     for r in results if r.image in images}
        return {"tables": {r.model: pd.DataFrame(r.meta["table"]) for r in results}, "confounds": confounds}


def _thumb_box(box, image_size: tuple[int, int]) -> list[float]:
    """(x0, y0, x1, y1) in image pixels → the same rectangle on :func:`_thumbnail`'s canvas."""
    width, height = image_size
    scale = THUMBNAIL / max(width, height)
    left = (THUMBNAIL - max(1, round(width * scale))) // 2
    top = (THUMBNAIL - max(1, round(height * scale))) // 2
    x0, y0, x1, y1 = box
    return [round(left + x0 * scale, 2), round(top + y0 * scale, 2), round(left + x1 * scale, 2), round(top + y1 * scale, 2)]


def _footprint_box(footprint: np.ndarray | None, image_size: tuple[int, int]) -> list[float] | None:
    """The bounding box of an edit's footprint on the thumbnail canvas (None when it is empty)."""
    if footprint is None or not footprint.any():
        return None
    ys, xs = np.nonzero(footprint)
    return _thumb_box((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), image_size)


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    """Fit into THUMBNAIL×THUMBNAIL (nearest for tiny images), padded to a square with white."""
    image = Image.fromarray(rgb)
    scale = THUMBNAIL / max(image.size)
    resample = Image.Resampling.NEAREST if scale > 2 else Image.Resampling.LANCZOS
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    canvas = Image.new("RGB", (THUMBNAIL, THUMBNAIL), (255, 255, 255))
    canvas.paste(image, ((THUMBNAIL - image.width) // 2, (THUMBNAIL - image.height) // 2))
    return np.asarray(canvas)
