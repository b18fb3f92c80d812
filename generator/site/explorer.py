"""Site side of the attention explorer: write one explorer's files into the docs folder, the
page placeholder, and the mkdocs ``extra_javascript``/``extra_css`` entries.

Layout under the docs folder (every path made of slugs only)::

    assets/vit-explorer/explorer.js, explorer.css      (once per site: write_explorer_assets)
    explorer/<model>/<image>/manifest.js                (VitExplorer.registerManifest(key, {...}))
    explorer/<model>/<image>/manifest.json              (the same manifest, for tools)
    explorer/<model>/<image>/image.png                  (the model-input view)
    explorer/<model>/<image>/block-00.js …              (VitExplorer.register(key + "/b0", base64))

The page loads ``manifest.js`` and one block's ``.js`` with ``<script>`` elements, so it works
both served and from ``file://`` (where ``fetch`` of local files is blocked). ``data-manifest``
in the placeholder is relative to the **site root**, which explorer.js derives from its own URL
(it must stay at ``assets/vit-explorer/explorer.js``), so the placeholder is the same on every
page whatever ``use_directory_urls`` says.
"""

from __future__ import annotations

import io
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..store.atomic import write_if_changed

if TYPE_CHECKING:  # generator.attention.explorer captures with torch; writing the site's assets needs neither
    from ..attention.explorer import ExplorerData

__all__ = [
    "ASSET_FILES",
    "ASSET_PREFIX",
    "ExplorerPage",
    "copy_assets_to",
    "explorer_key",
    "write_explorer",
    "write_explorer_assets",
]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
ASSET_PREFIX = "assets/vit-explorer"
ASSET_FILES = ("explorer.js", "explorer.css")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class ExplorerPage:
    """What a page needs to show one explorer.

    Attributes:
        key: registry key and URL-state id, ``"<model>--<image>"``.
        manifest: the manifest.js path relative to the docs root (POSIX).
        folder: the explorer's folder relative to the docs root.
        family: the model's family adapter name (:mod:`generator.families`).
        files: name → size in bytes of every file written.
        first_load_bytes: manifest.js + image.png + the first block's .js (the assets not counted).
        total_bytes: all files of this explorer.
    """

    key: str
    manifest: str
    folder: str
    family: str
    files: dict[str, int]
    first_load_bytes: int
    total_bytes: int


def explorer_key(model_slug: str, image_slug: str) -> str:
    """``"<model>--<image>"``; raises ValueError unless both are slugs (a-z, 0-9, single dashes)."""
    for s in (model_slug, image_slug):
        if not _SLUG.match(s):
            raise ValueError(f"{s!r} is not a slug (lowercase letters, digits and dashes)")
    return f"{model_slug}--{image_slug}"


def _png(view: np.ndarray) -> bytes:
    view = np.asarray(view)
    if view.ndim != 3 or view.shape[2] != 3 or view.dtype != np.uint8:
        raise ValueError(f"view must be (h, w, 3) uint8, got {view.shape} {view.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(view).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_explorer(docs_dir: Path, image_slug: str, model_slug: str, data: ExplorerData, view: np.ndarray,
                   top_k: int | None = None, binary: bool = False) -> ExplorerPage:
    """Write one image × model explorer under ``docs_dir/explorer/<model>/<image>/``.

    Files are replaced only when their bytes change (atomic writes); block files of an earlier
    export with more blocks are removed. Nothing outside that folder is touched.

    Args:
        docs_dir: the mkdocs docs folder.
        image_slug, model_slug: slugs as used for the figure paths.
        data: from :func:`generator.attention.explorer.vit_explorer_data` / ``swin_explorer_data``.
        view: (h, w, 3) uint8, the image the model sees (``ModelInput.view``).
        top_k: sparse export, keeping each row's k largest keys; None (default): dense.
        binary: also write the raw ``block-XX.bin`` files.

    Returns:
        :class:`ExplorerPage`.
    """
    from ..attention.explorer import explorer_files

    key = explorer_key(model_slug, image_slug)
    folder = Path(docs_dir) / "explorer" / model_slug / image_slug
    files, manifest = explorer_files(data, key, _png(view), top_k=top_k, binary=binary)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        write_if_changed(folder / name, content)
    for stale in folder.glob("block-*"):
        if stale.name not in files:
            stale.unlink()
    first = manifest["blocks"][0]["file"]
    return ExplorerPage(
        key=key,
        manifest=f"explorer/{model_slug}/{image_slug}/manifest.js",
        folder=f"explorer/{model_slug}/{image_slug}",
        family=data.family,
        files={n: len(c) for n, c in files.items()},
        first_load_bytes=len(files["manifest.js"]) + len(files["image.png"]) + len(files[first]),
        total_bytes=sum(len(c) for n, c in files.items()),
    )


def write_explorer_assets(docs_dir: Path) -> list[Path]:
    """Copy explorer.js and explorer.css to ``docs_dir/assets/vit-explorer/`` (only when changed)."""
    written = []
    for name in ASSET_FILES:
        target = Path(docs_dir) / ASSET_PREFIX / name
        write_if_changed(target, (ASSETS_DIR / name).read_bytes())
        written.append(target)
    return written


def copy_assets_to(folder: Path) -> None:
    """Copy the asset files into ``folder/assets/vit-explorer`` (for standalone pages and tests)."""
    target = Path(folder) / ASSET_PREFIX
    target.mkdir(parents=True, exist_ok=True)
    for name in ASSET_FILES:
        shutil.copyfile(ASSETS_DIR / name, target / name)
