"""The input image set: loading, mode conversion, EXIF orientation, stable safe slugs.

A bad file never stops the batch: :func:`scan_images` returns the good items and one
:class:`ImageFailure` per bad file.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

# Pillow's decompression-bomb guard stays on; a deployment may tighten or loosen it explicitly.
if os.environ.get("VIT_GALLERY_MAX_IMAGE_PIXELS"):
    Image.MAX_IMAGE_PIXELS = int(os.environ["VIT_GALLERY_MAX_IMAGE_PIXELS"])


@dataclass
class ImageItem:
    """One loaded input image.

    Attributes:
        slug: safe, stable identifier used in paths and page names.
        path: the source file.
        sha256: hash of the file's bytes (part of every cache key).
        rgb: (H, W, 3) uint8 array.
        notes: what was done to it (mode conversion, EXIF rotation, first frame …).
    """

    slug: str
    path: Path
    sha256: str
    rgb: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class ImageFailure:
    """A file that could not be used, with a one-line reason."""

    path: Path
    reason: str


class ImageLoadError(ValueError):
    """An image file that cannot be used."""


def slugify(name: str) -> str:
    """A lowercase ASCII slug of a file name's stem: letters, digits and single dashes.

    >>> slugify("Tabby Cat (1).JPG")
    'tabby-cat-1'
    """
    stem = Path(name).stem
    ascii_text = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:60].strip("-")


def unique_slugs(names: list[str]) -> dict[str, str]:
    """Map each file name to a slug that no other name in ``names`` shares.

    Names whose plain slug collides (or is empty) get a short hash of the exact name, so
    the result does not depend on the order or on which other files exist.
    """
    plain = {n: slugify(n) for n in names}
    counts: dict[str, int] = {}
    for slug in plain.values():
        counts[slug] = counts.get(slug, 0) + 1
    out = {}
    for name, slug in plain.items():
        if not slug or counts[slug] > 1:
            suffix = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
            slug = f"{slug}-{suffix}" if slug else f"image-{suffix}"
        out[name] = slug
    return out


def to_rgb(image: Image.Image, notes: list[str]) -> np.ndarray:
    """Convert any Pillow mode to (H, W, 3) uint8, recording what was done in ``notes``."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0, 0, 255).round().astype(np.uint8)
        notes.append(f"{mode} scaled to 8-bit")
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA")
        notes.append("palette converted")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
        notes.append("alpha composited on white")
    elif mode != "RGB":
        image = image.convert("RGB")
        notes.append(f"{mode} converted to RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def load_image(path: Path) -> tuple[np.ndarray, list[str], str]:
    """Read one file → (rgb (H, W, 3) uint8, notes, sha256 of the bytes).

    Raises:
        ImageLoadError: empty, truncated, corrupt or non-image files, and decompression bombs.
    """
    data = path.read_bytes()
    if not data:
        raise ImageLoadError("empty file (0 bytes)")
    sha = hashlib.sha256(data).hexdigest()
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if getattr(image, "n_frames", 1) > 1:
                    notes.append(f"animated ({image.n_frames} frames): first frame used")
                    image.seek(0)
                image.load()
                transposed = ImageOps.exif_transpose(image)
                if transposed is not image and image.getexif().get(0x0112, 1) not in (1, None):
                    notes.append("EXIF orientation applied")
                rgb = to_rgb(transposed, notes)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"decompression bomb refused by Pillow's guard: {exc}") from None
    except UnidentifiedImageError:
        raise ImageLoadError("not an image Pillow can read (wrong extension or corrupt header)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"truncated or corrupt image: {exc}") from None
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageLoadError("image has no pixels")
    return rgb, notes, sha


def scan_images(folder: Path) -> tuple[list[ImageItem], list[ImageFailure]]:
    """Load every image file in ``folder`` (not recursive), sorted by name.

    Returns the loaded items and one failure per unusable file; never raises for a bad file.
    """
    paths = sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )
    slugs = unique_slugs([p.name for p in paths])
    items, failures = [], []
    for path in paths:
        try:
            rgb, notes, sha = load_image(path)
        except ImageLoadError as exc:
            failures.append(ImageFailure(path, str(exc)))
            continue
        items.append(ImageItem(slug=slugs[path.name], path=path, sha256=sha, rgb=rgb, notes=notes))
    return items, failures
