"""The input image set: loading, mode conversion, EXIF orientation, stable safe slugs.

A bad file never stops the batch: :func:`scan_images` returns the good items and one
:class:`ImageFailure` per bad file (unreadable, broken or looping symlinks, names the file
files Pillow refuses). Large images are not kept in memory: an item
holds its pixels only when they are small (:data:`KEEP_PIXELS_BELOW`), and otherwise decodes
them again when asked, so a build's peak memory does not grow with the number of large images.
"""

from __future__ import annotations

import errno
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


#: Images with fewer pixels than this keep their decoded pixels; larger ones are decoded on demand.
KEEP_PIXELS_BELOW = 4_000_000


def display_name(name: str) -> str:
    """A file name as text a page can show: undecodable bytes become U+FFFD.

    >>> display_name("caf\udce9.png")
    'caf\ufffd.png'
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass
class ImageItem:
    """One input image.

    Attributes:
        slug: safe, stable identifier used in paths and page names.
        path: the source file.
        sha256: hash of the file's bytes (part of every cache key).
        shape: (H, W) after EXIF orientation.
        notes: what was done to it (mode conversion, EXIF rotation, first frame …).
        pixels: (H, W, 3) uint8, kept only for small images; see :attr:`rgb`.
        known_label: the image's class in a class-folder dataset (its folder's name), else None.
        verdicts: in dataset mode, model name → {"predicted": label, "correct": bool}, set by the
            runner from the results (pages say whether each prediction is right).
    """

    slug: str
    path: Path
    sha256: str
    shape: tuple[int, int]
    notes: list[str] = field(default_factory=list)
    pixels: np.ndarray | None = field(default=None, repr=False)
    known_label: str | None = None
    verdicts: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file name as text (undecodable bytes shown as U+FFFD); ``class/file`` in a dataset."""
        if self.known_label is not None:
            return display_name(f"{self.path.parent.name}/{self.path.name}")
        return display_name(self.path.name)

    @property
    def rgb(self) -> np.ndarray:
        """(H, W, 3) uint8 pixels: kept for small images, decoded again for large ones.

        Raises:
            ImageLoadError: the file changed or vanished since it was scanned.
        """
        if self.pixels is not None:
            return self.pixels
        rgb, _, sha = load_image(self.path)
        if sha != self.sha256:
            raise ImageLoadError(f"{self.name} changed on disk while the build ran; run it again")
        return rgb


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
    stem = Path(display_name(name)).stem
    ascii_text = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:60].strip("-")


def slugify_name(name: str) -> str:
    """A slug of a whole name, suffix and slashes included (model names such as ``ViT-B/16``).

    >>> slugify_name("ViT-B/16")
    'vit-b-16'
    """
    ascii_text = unicodedata.normalize("NFKD", display_name(name)).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:60].strip("-")


def _name_hash(name: str, length: int) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:length]


def unique_slugs(names: list[str], slug=slugify) -> dict[str, str]:
    """Map each name to a slug that no other name in ``names`` shares.

    A name keeps its plain slug when no other name has the same one. Names whose plain slug
    collides (or is empty) get a hash of the exact name; the hash grows until the slug also
    differs from every other name's slug, plain or hashed (so ``a b.png`` cannot take the
    slug of a file that is literally named ``a-b-<hash>.png``). The result depends only on
    the set of names, not on their order.
    """
    names = sorted(set(names), key=lambda n: n.encode("utf-8", "surrogateescape"))
    plain = {n: slug(n) for n in names}
    counts: dict[str, int] = {}
    for s in plain.values():
        counts[s] = counts.get(s, 0) + 1
    out = {n: s for n, s in plain.items() if s and counts[s] == 1}
    taken = set(out.values())
    for length in (8, 16, 32, 64):
        pending = [n for n in names if n not in out]
        if not pending:
            break
        candidates = {n: f"{plain[n] or 'image'}-{_name_hash(n, length)}" for n in pending}
        for n, s in candidates.items():
            if s not in taken and list(candidates.values()).count(s) == 1:
                out[n] = s
        taken |= {out[n] for n in pending if n in out}
    for n in names:  # 64 hex digits of SHA-256 cannot collide in practice; this keeps the promise anyway
        if n not in out:
            i = 2
            while f"{plain[n] or 'image'}-{_name_hash(n, 64)}-{i}" in taken:
                i += 1
            out[n] = f"{plain[n] or 'image'}-{_name_hash(n, 64)}-{i}"
            taken.add(out[n])
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
        ImageLoadError: empty, truncated, corrupt or non-image files, decompression bombs, and
            files that cannot be opened at all (permissions, broken or looping links).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageLoadError(f"cannot be read: {exc.strerror or exc}") from None
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


def _entry_problem(path: Path) -> str | None:
    """Why a directory entry cannot be used as an image file, or None when it can."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        return (f"file name is not valid UTF-8 (shown as {display_name(path.name)!r}): skipped, since pages, "
                "links and the navigation could not name it faithfully; rename the file")
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python 3.11 raises this for loops
            return "symlink loop: skipped"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "symlink loop: skipped"
            return f"broken symlink (its target {os.readlink(path)!r} does not exist): skipped"
        return "symlink: skipped (only regular files in the image folder are read)"
    return None


def scan_images(folder: Path) -> tuple[list[ImageItem], list[ImageFailure]]:
    """Load every image file in ``folder`` (not recursive), sorted by name.

    Returns the loaded items and one failure per unusable entry with an image suffix (broken,
    unreadable, looping or plain symlinks, names that are not UTF-8); never raises for a bad file.
    """
    entries = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                     key=lambda p: os.fsencode(p.name))
    items, failures, usable = [], [], []
    for path in entries:
        problem = _entry_problem(path)
        if problem is not None:
            failures.append(ImageFailure(path, problem))
        elif path.is_file():
            usable.append(path)
    slugs = unique_slugs([p.name for p in usable])
    for path in usable:
        try:
            rgb, notes, sha = load_image(path)
        except ImageLoadError as exc:
            failures.append(ImageFailure(path, str(exc)))
            continue
        keep = rgb if rgb.shape[0] * rgb.shape[1] < KEEP_PIXELS_BELOW else None
        items.append(ImageItem(slug=slugs[path.name], path=path, sha256=sha, shape=rgb.shape[:2], notes=notes,
                               pixels=keep))
        del rgb
    return items, failures


#: In dataset mode, images with fewer pixels than this keep their decoded pixels (28×28 digits do,
#: ImageNet photos do not): thousands of items must not hold thousands of decoded photos.
DATASET_KEEP_PIXELS_BELOW = 65_536


def _dataset_slug(relative: str) -> str:
    """``Coat/img 1.png`` → ``coat-img-1``: the class folder and the file's stem."""
    return slugify_name(str(Path(relative).with_suffix("")))


def scan_dataset(root: Path, keep_pixels_below: int = DATASET_KEEP_PIXELS_BELOW
                 ) -> tuple[list[ImageItem], list[ImageFailure]]:
    """Load a class-folder dataset (ImageFolder layout: ``root/<class>/<image>``), sorted by class then name.

    Each item's :attr:`ImageItem.known_label` is its class folder's name; its slug is made of
    the class and the file's stem, unique over the whole set. Files directly in ``root`` and
    deeper folders are not read. Bad files become :class:`ImageFailure` records, as in
    :func:`scan_images`.

    Raises:
        ImageLoadError: ``root`` has no class folders.
    """
    classes = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: os.fsencode(p.name))
    if not classes:
        raise ImageLoadError(f"{root} has no class folders (dataset mode expects <images>/<class>/<image>)")
    entries: list[tuple[Path, str]] = []
    for folder in classes:
        for path in sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                           key=lambda p: os.fsencode(p.name)):
            entries.append((path, display_name(folder.name)))
    items, failures, usable = [], [], []
    for path, label in entries:
        problem = _entry_problem(path)
        if problem is not None:
            failures.append(ImageFailure(path, problem))
        elif path.is_file():
            usable.append((path, label))
    relative = {path: f"{path.parent.name}/{path.name}" for path, _ in usable}
    slugs = unique_slugs(list(relative.values()), slug=_dataset_slug)
    for path, label in usable:
        try:
            rgb, notes, sha = load_image(path)
        except ImageLoadError as exc:
            failures.append(ImageFailure(path, str(exc)))
            continue
        keep = rgb if rgb.shape[0] * rgb.shape[1] < keep_pixels_below else None
        items.append(ImageItem(slug=slugs[relative[path]], path=path, sha256=sha, shape=rgb.shape[:2], notes=notes,
                               pixels=keep, known_label=label))
        del rgb
    return items, failures
