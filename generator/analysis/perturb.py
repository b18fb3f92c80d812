"""Location and size perturbations: declarative image edits and their prediction tables.

Edits are pure functions on (H, W, 3) uint8 arrays. A variant is an ordered list of edits on the
original image, declared in the config or in ``<image>.variants.toml`` next to the image;
hand-made files ``<image>.variants/NAME.png`` are variants too.

A region is one of ``box = [x0, y0, x1, y1]`` (pixels, end exclusive), ``rbox = [...]``
(fractions of the width and height) or ``mask = "file.png"`` (non-zero pixels, same size as the
image). A region must lie inside the image; an edit whose result would leave the image is
clipped, and the clipping is reported in the edit's notes.

A variant's numbers are in the photo's pixels, or with ``space = "input"`` in the pixels of the
model's input (the resized, centre-cropped image the model sees): :func:`to_image_space` maps
them onto the photo through the model's :class:`~generator.data.input_frame.InputFrame`, and the edit
is then applied to the photo at full resolution. Every edit also reports its footprint (the
pixels it placed or changed) and the pixels it lost past the border, so that the share of an
edit the model does not see can be measured.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..data.input_frame import InputFrame

__all__ = [
    "EditError",
    "Variant",
    "apply_variant",
    "load_variants",
    "parse_variants",
    "prediction_table",
    "to_image_space",
]

OPERATIONS = {
    "move": {"to", "fill"},
    "scale": {"factor", "anchor", "fill"},
    "split": {"parts", "axis", "gap", "fill"},
    "erase": {"fill"},
    "paste": {"source", "source_region", "to"},
}
REGION_KEYS = {"box", "rbox", "mask"}
#: The coordinate spaces a variant may be declared in: the photo's pixels, or the model input's.
SPACES = ("image", "input")


class EditError(ValueError):
    """A bad variant declaration or an edit that cannot be applied; names the variant and the edit."""


@dataclass(frozen=True)
class Variant:
    """A named list of edits (each a dict with ``op``), or a hand-made file."""

    name: str
    edits: tuple[dict[str, Any], ...] = ()
    file: Path | None = None
    base_dir: Path | None = None  # for mask and paste-source paths
    #: "image": numbers are photo pixels; "input": pixels of the model's input (see to_image_space).
    space: str = "image"


@dataclass
class Region:
    """A resolved region: boolean mask and its bounding box (y0, y1, x0, x1), end exclusive."""

    mask: np.ndarray
    bbox: tuple[int, int, int, int]


@dataclass
class EditResult:
    """An edited image, notes on clipping, and where the edit landed.

    Attributes:
        image: (H, W, 3) uint8.
        footprint: (H, W) bool, the pixels the edit placed (moved, scaled, split or pasted content)
            or changed (erased); None when unknown.
        lost: pixels of placed content that fell past the image border.
    """

    image: np.ndarray
    notes: list[str] = field(default_factory=list)
    footprint: np.ndarray | None = None
    lost: int = 0


# --------------------------------------------------------------------------- regions


def resolve_region(spec: dict[str, Any], shape: tuple[int, int], base_dir: Path | None, where: str) -> Region:
    """Turn a region spec into a mask inside an image of ``shape`` (H, W); raise EditError if invalid."""
    height, width = shape
    keys = REGION_KEYS & set(spec)
    if len(keys) != 1:
        raise EditError(f"{where}: give exactly one of box, rbox or mask (got {sorted(keys) or 'none'})")
    key = keys.pop()
    if key == "mask":
        path = _declared_path(base_dir, spec["mask"], "mask", where)
        if not path.is_file():
            raise EditError(f"{where}: mask file not found: {path}")
        mask = np.asarray(Image.open(path).convert("L")) > 0
        if mask.shape != (height, width):
            raise EditError(f"{where}: mask is {mask.shape[1]}×{mask.shape[0]}, the image {width}×{height}")
        if not mask.any():
            raise EditError(f"{where}: the mask is empty (zero-size region)")
        ys, xs = np.nonzero(mask)
        return Region(mask, (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1))
    box = spec[key]
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
        raise EditError(f"{where}: {key} must be [x0, y0, x1, y1], got {box!r}")
    if key == "rbox":
        if not all(0.0 <= v <= 1.0 for v in box):
            raise EditError(f"{where}: rbox values must be fractions in [0, 1], got {box}")
        box = [round(box[0] * width), round(box[1] * height), round(box[2] * width), round(box[3] * height)]
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise EditError(f"{where}: zero-size region {[x0, y0, x1, y1]}")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise EditError(f"{where}: region {[x0, y0, x1, y1]} is outside the {width}×{height} image")
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return Region(mask, (y0, y1, x0, x1))


# --------------------------------------------------------------------------- edits (pure)


def fill_region(image: np.ndarray, mask: np.ndarray, fill: Any = "mean") -> np.ndarray:
    """Fill ``mask`` with the image's mean colour, a blurred copy of the image, or an [r, g, b] colour."""
    out = image.copy()
    if fill == "mean":
        out[mask] = np.round(image.reshape(-1, 3).mean(axis=0)).astype(np.uint8)
    elif fill == "blur":
        sigma = max(image.shape[:2]) / 10.0
        from scipy.ndimage import gaussian_filter

        blurred = np.stack([gaussian_filter(image[..., c].astype(np.float64), sigma) for c in range(3)], axis=-1)
        out[mask] = np.clip(np.round(blurred[mask]), 0, 255).astype(np.uint8)
    elif isinstance(fill, (list, tuple)) and len(fill) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in fill):
        out[mask] = np.asarray(fill, dtype=np.uint8)
    else:
        raise EditError(f'fill must be "mean", "blur" or [r, g, b] in 0…255, got {fill!r}')
    return out


def paste_patch(image: np.ndarray, patch: np.ndarray, patch_mask: np.ndarray, top: int, left: int,
                what: str) -> EditResult:
    """Paste the masked pixels of ``patch`` with its top-left corner at (top, left); clip at the borders."""
    out = image.copy()
    height, width = image.shape[:2]
    ph, pw = patch.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + ph, height), min(left + pw, width)
    notes = []
    footprint = np.zeros((height, width), dtype=bool)
    if y1 <= y0 or x1 <= x0:
        return EditResult(out, [f"{what}: moved entirely outside the image, nothing pasted"], footprint,
                          int(patch_mask.sum()))
    if (y0, x0, y1, x1) != (top, left, top + ph, left + pw):
        lost = ph * pw - (y1 - y0) * (x1 - x0)
        notes.append(f"{what}: clipped at the image border ({lost} of {ph * pw} pixels lost)")
    sub = patch[y0 - top : y1 - top, x0 - left : x1 - left]
    sub_mask = patch_mask[y0 - top : y1 - top, x0 - left : x1 - left]
    target = out[y0:y1, x0:x1]
    target[sub_mask] = sub[sub_mask]
    footprint[y0:y1, x0:x1] = sub_mask
    return EditResult(out, notes, footprint, int(patch_mask.sum() - sub_mask.sum()))


def _crop(image: np.ndarray, region: Region) -> tuple[np.ndarray, np.ndarray]:
    y0, y1, x0, x1 = region.bbox
    return image[y0:y1, x0:x1].copy(), region.mask[y0:y1, x0:x1].copy()


def move(image: np.ndarray, region: Region, to: tuple[int, int], fill: Any = "mean") -> EditResult:
    """Cut ``region`` and paste it with its bounding box's top-left corner at ``to`` = (x, y)."""
    patch, patch_mask = _crop(image, region)
    holed = fill_region(image, region.mask, fill)
    return paste_patch(holed, patch, patch_mask, int(to[1]), int(to[0]), "move")


def _anchor_point(bbox, anchor) -> tuple[float, float]:
    y0, y1, x0, x1 = bbox
    named = {"center": ((y0 + y1) / 2, (x0 + x1) / 2), "top-left": (y0, x0), "top-right": (y0, x1),
             "bottom-left": (y1, x0), "bottom-right": (y1, x1)}
    if isinstance(anchor, str):
        if anchor not in named:
            raise EditError(f"anchor must be one of {sorted(named)} or [x, y], got {anchor!r}")
        return named[anchor]
    if isinstance(anchor, (list, tuple)) and len(anchor) == 2:
        return float(anchor[1]), float(anchor[0])
    raise EditError(f"anchor must be a name or [x, y], got {anchor!r}")


def scale(image: np.ndarray, region: Region, factor: float, anchor: Any = "center", fill: Any = "mean") -> EditResult:
    """Resize ``region`` in place by ``factor``, keeping ``anchor`` (a named corner, the centre, or [x, y]) fixed."""
    if not isinstance(factor, (int, float)) or factor <= 0:
        raise EditError(f"factor must be > 0, got {factor!r}")
    patch, patch_mask = _crop(image, region)
    ph, pw = patch.shape[:2]
    nh, nw = max(1, round(ph * factor)), max(1, round(pw * factor))
    resized = np.asarray(Image.fromarray(patch).resize((nw, nh), Image.Resampling.LANCZOS))
    resized_mask = np.asarray(Image.fromarray(patch_mask.astype(np.uint8) * 255).resize((nw, nh), Image.Resampling.NEAREST)) > 127
    ay, ax = _anchor_point(region.bbox, anchor)
    y0, _, x0, _ = region.bbox
    top = round(ay - (ay - y0) * factor)
    left = round(ax - (ax - x0) * factor)
    holed = fill_region(image, region.mask, fill)
    return paste_patch(holed, resized, resized_mask, top, left, "scale")


def split(image: np.ndarray, region: Region, parts: int = 2, axis: str = "x", gap: int = 4, fill: Any = "mean") -> EditResult:
    """Cut ``region`` into ``parts`` equal strips along ``axis`` ("x": side by side) and push them
    apart: strip i moves by (i − (parts − 1)/2)·gap pixels, so the gaps between strips grow by ``gap``."""
    if not isinstance(parts, int) or parts < 2:
        raise EditError(f"parts must be an integer ≥ 2, got {parts!r}")
    if axis not in ("x", "y"):
        raise EditError(f'axis must be "x" or "y", got {axis!r}')
    patch, patch_mask = _crop(image, region)
    y0, y1, x0, x1 = region.bbox
    length = (x1 - x0) if axis == "x" else (y1 - y0)
    if length < parts:
        raise EditError(f"region is {length} px along {axis}: too small for {parts} parts")
    cuts = np.linspace(0, length, parts + 1).round().astype(int)
    out = EditResult(fill_region(image, region.mask, fill), footprint=np.zeros(image.shape[:2], dtype=bool))
    for i in range(parts):
        a, b = cuts[i], cuts[i + 1]
        offset = round((i - (parts - 1) / 2) * gap)
        if axis == "x":
            piece, piece_mask, top, left = patch[:, a:b], patch_mask[:, a:b], y0, x0 + a + offset
        else:
            piece, piece_mask, top, left = patch[a:b], patch_mask[a:b], y0 + a + offset, x0
        step = paste_patch(out.image, piece, piece_mask, top, left, f"split part {i + 1}")
        out = EditResult(step.image, out.notes + step.notes, out.footprint | step.footprint, out.lost + step.lost)
    return out


def erase(image: np.ndarray, region: Region, fill: Any = "mean") -> EditResult:
    return EditResult(fill_region(image, region.mask, fill), footprint=region.mask.copy())


def paste(image: np.ndarray, source: np.ndarray, source_region: Region, to: tuple[int, int]) -> EditResult:
    """Paste ``source_region`` of another image with its top-left corner at ``to`` = (x, y)."""
    patch, patch_mask = _crop(source, source_region)
    return paste_patch(image, patch, patch_mask, int(to[1]), int(to[0]), "paste")


# --------------------------------------------------------------------------- declarations


def parse_variants(data: Any, where: str, base_dir: Path | None = None) -> list[Variant]:
    """Validate ``[[variant]]`` tables: each has a name and a list of edits with known ops and keys."""
    if not isinstance(data, list):
        raise EditError(f"{where}: expected an array of [[variant]] tables")
    variants, names = [], set()
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise EditError(f"{where}: variant {i} needs a non-empty name")
        name = entry["name"]
        if name in names:
            raise EditError(f"{where}: duplicate variant name {name!r}")
        names.add(name)
        unknown = set(entry) - {"name", "edit", "edits", "space"}
        if unknown:
            raise EditError(f"{where}: variant {name!r}: unknown keys {sorted(unknown)}")
        space = entry.get("space", "image")
        if space not in SPACES:
            raise EditError(f'{where}: variant {name!r}: space must be "image" (photo pixels) or "input" '
                            f"(pixels of the model's input), got {space!r}")
        edits = entry.get("edit", entry.get("edits", []))
        if not isinstance(edits, list) or not edits:
            raise EditError(f"{where}: variant {name!r} has no edits")
        for j, edit in enumerate(edits):
            label = f"{where}: variant {name!r}, edit {j + 1}"
            if not isinstance(edit, dict) or "op" not in edit:
                raise EditError(f"{label}: each edit needs an op")
            op = edit["op"]
            if op not in OPERATIONS:
                import difflib

                close = difflib.get_close_matches(str(op), OPERATIONS, n=1)
                raise EditError(f"{label}: unknown op {op!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                                + f" (known: {', '.join(OPERATIONS)})")
            allowed = OPERATIONS[op] | REGION_KEYS | {"op"}
            extra = set(edit) - allowed
            if extra:
                raise EditError(f"{label} ({op}): unknown keys {sorted(extra)}; allowed: {sorted(allowed - {'op'})}")
            region = edit if op != "paste" else edit.get("source_region") or {}
            region_keys = REGION_KEYS & set(region)
            if len(region_keys) != 1:
                where = "source_region" if op == "paste" else "the edit"
                raise EditError(f"{label} ({op}): {where} needs exactly one of box, rbox or mask")
            if "mask" in region and space == "input":
                raise EditError(f"{label} ({op}): a mask is drawn in photo pixels; with space = \"input\" "
                                "give the region as box or rbox")
            if "mask" in region and base_dir is not None:
                _declared_path(base_dir, region["mask"], "mask", f"{label} ({op})")
            if op == "paste":
                _declared_path(Path("images-folder"), edit.get("source"), "paste source", f"{label} ({op})",
                               lexical=True)
        variants.append(Variant(name=name, edits=tuple(edits), base_dir=base_dir, space=space))
    return variants


def _declared_path(base: Path | None, value: Any, what: str, where: str, lexical: bool = False) -> Path:
    """A declared path resolved inside ``base``; EditError for absolute paths and paths that leave it.

    ``lexical`` checks the words alone (the folder is known only later, e.g. the image folder).
    """
    from ..store.safepaths import PathError, confined

    if not isinstance(value, str) or not value:
        raise EditError(f"{where}: {what} must be a file path, got {value!r}")
    if base is None:
        raise EditError(f"{where}: {what} {value!r} has no folder to be relative to")
    try:
        if lexical:
            return confined(Path("/nonexistent-root"), value, what)
        return confined(base, value, what)
    except PathError as exc:
        raise EditError(f"{where}: {exc}".replace(" /nonexistent-root", " the image folder")) from None


def load_variants(image_path: Path) -> list[Variant]:
    """Variants declared next to an image: ``<image>.variants.toml`` and ``<image>.variants/*.png``."""
    out: list[Variant] = []
    declared = image_path.with_name(image_path.name + ".variants.toml")
    folder = image_path.with_name(image_path.name + ".variants")
    # A name too long for the file system cannot have declarations beside it.
    if _name_fits(declared) and declared.is_file():
        try:
            data = tomllib.loads(declared.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise EditError(f"{declared}: not valid TOML: {exc}") from None
        out += parse_variants(data.get("variant", []), str(declared), declared.parent)
    if _name_fits(folder) and folder.is_dir():
        out += [Variant(name=p.stem, file=p) for p in sorted(folder.glob("*.png"))]
    return out


def _name_fits(path: Path) -> bool:
    """Whether the file system can hold ``path``'s name (``is_file`` raises on names over its limit)."""
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    return len(os.fsencode(path.name)) <= limit


def to_image_space(variant: Variant, frame: InputFrame) -> Variant:
    """A ``space = "input"`` variant with its numbers mapped onto the photo through ``frame``.

    Boxes and ``rbox`` (fractions of the model's input) become photo-pixel boxes, ``to`` and
    ``[x, y]`` anchors photo points, and ``gap`` photo pixels. A paste's ``source_region`` stays
    in its source image's pixels. Variants in image space are returned unchanged.
    """
    if variant.space != "input":
        return variant
    in_w, in_h = frame.input_size
    sx, sy = frame.scale

    def point(x: float, y: float) -> list[int]:
        px, py = frame.to_image(x, y)
        return [int(round(px)), int(round(py))]

    edits = []
    for edit in variant.edits:
        mapped = dict(edit)
        if "box" in edit or "rbox" in edit:
            box = edit.get("box") or edit["rbox"]
            if not isinstance(box, (list, tuple)) or len(box) != 4:
                raise EditError(f"variant {variant.name!r}: {'box' if 'box' in edit else 'rbox'} must be [x0, y0, x1, y1]")
            if "rbox" in edit:
                box = [box[0] * in_w, box[1] * in_h, box[2] * in_w, box[3] * in_h]
                del mapped["rbox"]
            mapped["box"] = point(box[0], box[1]) + point(box[2], box[3])
        if isinstance(edit.get("to"), (list, tuple)) and len(edit["to"]) == 2:
            mapped["to"] = point(*edit["to"])
        if isinstance(edit.get("anchor"), (list, tuple)) and len(edit["anchor"]) == 2:
            ax, ay = frame.to_image(*edit["anchor"])
            mapped["anchor"] = [round(ax, 3), round(ay, 3)]
        if isinstance(edit.get("gap"), (int, float)):
            mapped["gap"] = int(round(edit["gap"] * (sx if edit.get("axis", "x") == "x" else sy)))
        edits.append(mapped)
    return Variant(name=variant.name, edits=tuple(edits), file=variant.file, base_dir=variant.base_dir, space="image")


def apply_variant(image: np.ndarray, variant: Variant, others: dict[str, np.ndarray] | None = None,
                  frame: InputFrame | None = None) -> EditResult:
    """Apply a variant's edits in order to (H, W, 3) uint8 ``image``; return the result and all notes.

    Args:
        others: file name → image, for ``paste`` sources.
        frame: the model's input in ``image``; needed for variants declared with ``space = "input"``.

    Returns:
        The edited image, its notes, and the union of the edits' footprints (for a hand-made file:
        the pixels that differ from the original) with the pixels lost past the border.
    """
    if variant.file is not None:
        from ..data.images import load_image

        rgb, notes, _ = load_image(variant.file)
        if rgb.shape != image.shape:
            rgb = np.asarray(Image.fromarray(rgb).resize(image.shape[1::-1], Image.Resampling.LANCZOS))
            notes.append(f"resized to the original's {image.shape[1]}×{image.shape[0]}")
        return EditResult(rgb, notes, footprint=(rgb != image).any(axis=-1))
    if variant.space == "input":
        if frame is None:
            raise EditError(f"variant {variant.name!r} is declared in the model's input (space = \"input\"); "
                            "it can only be applied for a model")
        variant = to_image_space(variant, frame)
    current = EditResult(image.copy(), footprint=np.zeros(image.shape[:2], dtype=bool))
    for j, edit in enumerate(variant.edits):
        where = f"variant {variant.name!r}, edit {j + 1} ({edit.get('op')})"
        try:
            step = _apply_edit(current.image, edit, variant.base_dir, others or {}, where)
        except EditError as exc:
            raise EditError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
        footprint = current.footprint if step.footprint is None else current.footprint | step.footprint
        current = EditResult(step.image, current.notes + [f"{where}: {n}" for n in step.notes], footprint,
                             current.lost + step.lost)
    return current


def _apply_edit(image, edit, base_dir, others, where) -> EditResult:
    op = edit["op"]
    shape = image.shape[:2]
    fill = edit.get("fill", "mean")
    if op == "paste":
        source_name = edit.get("source")
        if source_name not in others:
            raise EditError(f"{where}: paste source {source_name!r} is not an image of the set")
        source = others[source_name]
        region = resolve_region(edit.get("source_region", {}), source.shape[:2], base_dir, where)
        return paste(image, source, region, _point(edit.get("to"), where))
    region = resolve_region(edit, shape, base_dir, where)
    if op == "move":
        return move(image, region, _point(edit.get("to"), where), fill)
    if op == "scale":
        return scale(image, region, edit.get("factor", 0.5), edit.get("anchor", "center"), fill)
    if op == "split":
        return split(image, region, edit.get("parts", 2), edit.get("axis", "x"), edit.get("gap", 4), fill)
    return erase(image, region, fill)


def _point(value, where) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise EditError(f"{where}: 'to' must be [x, y] in pixels, got {value!r}")
    return int(value[0]), int(value[1])


# --------------------------------------------------------------------------- tables


def prediction_table(names: list[str], probs: np.ndarray, class_names: tuple[str, ...], k: int = 3) -> pd.DataFrame:
    """The study's Table I: each variant's top-k classes, plus where the original's top-1 class went.

    Args:
        names: variant names, the original first.
        probs: (variants, classes) softmax probabilities.

    Returns:
        One row per variant: "Variant", "1st class", "1st %", … , "Original top-1 rank", "Original top-1 %".
    """
    original_top = int(np.argmax(probs[0]))
    rows = []
    for name, p in zip(names, probs):
        order = np.argsort(-p, kind="stable")
        row: dict[str, Any] = {"Variant": name}
        for rank in range(min(k, len(p))):
            ordinal = ("1st", "2nd", "3rd")[rank] if rank < 3 else f"{rank + 1}th"
            row[f"{ordinal} class"] = class_names[order[rank]]
            row[f"{ordinal} %"] = round(100.0 * float(p[order[rank]]), 2)
        row["Original top-1 rank"] = int(np.nonzero(order == original_top)[0][0]) + 1
        row["Original top-1 %"] = round(100.0 * float(p[original_top]), 2)
        rows.append(row)
    return pd.DataFrame(rows)
