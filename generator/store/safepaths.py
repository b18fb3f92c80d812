"""Where the tool may read and write: declared paths stay in their folder; output folders are owned.

Two rules live here, so that every writer and every reader of a declared path uses the same checks:

- A path written in a declaration (a variant's mask or paste source, a probe dataset) is relative
  and stays inside the folder it is declared relative to: absolute paths and ``..`` that climb out
  (also through a symlink) are refused.
- The tool writes into, and cleans, only folders it owns: an ``output`` or ``site_dir`` is used when
  it does not exist yet, is empty, or carries the marker file that an earlier build wrote
  (:data:`MARKER`). Folders that hold the user's own files, the images, the config, the home
  folder or ``/`` are refused before any work starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["MARKER", "PathError", "claim_folder", "confined", "ensure_inside", "folder_problem", "is_owned"]

#: Marker file written into every folder the tool owns. mkdocs' clean step keeps dot-files.
MARKER = ".vit-gallery"


class PathError(ValueError):
    """A path that leaves its folder, or a folder the tool may not write into."""


def confined(base: Path, relative: str | os.PathLike, what: str) -> Path:
    """``base / relative``, refused unless it is relative and stays inside ``base``.

    Args:
        base: the folder the declaration is relative to.
        relative: the declared path.
        what: how to name the path in the error (e.g. ``"mask"``).

    Raises:
        PathError: an absolute path, or one that leaves ``base`` (``..``, or a symlink pointing out).

    >>> confined(Path("/data"), "a/b.png", "mask").as_posix()
    '/data/a/b.png'
    """
    rel = Path(relative)
    if rel.is_absolute() or (os.path.splitdrive(str(relative))[0]):
        raise PathError(f"{what} {str(relative)!r} is absolute; give a path relative to {base}")
    candidate = Path(os.path.normpath(base / rel))
    root = Path(os.path.normpath(base))
    if candidate != root and root not in candidate.parents:
        raise PathError(f"{what} {str(relative)!r} leaves its folder {base}")
    resolved, resolved_root = candidate.resolve(), root.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise PathError(f"{what} {str(relative)!r} points outside its folder {base} (through a symlink)")
    return candidate


def ensure_inside(root: Path, path: Path) -> None:
    """Refuse an output path that would leave ``root`` (``..``, absolute parts, symlinks pointing out)."""
    if root.resolve() not in path.resolve().parents:
        raise PathError(f"output path {path} would leave the output folder {root}")


def is_owned(folder: Path) -> bool:
    """Whether ``folder`` carries the marker an earlier build wrote."""
    return (folder / MARKER).is_file()


def folder_problem(folder: Path, role: str, protected: dict[str, Path]) -> str | None:
    """Why the tool may not write into ``folder`` (as ``role``), or None when it may.

    Args:
        folder: the resolved folder.
        role: "output" or "site_dir", for the message.
        protected: folders that must never be written over, by name (images, config folder …):
            ``folder`` may be neither one of them nor contain one.
    """
    folder = folder.resolve()
    forbidden = {Path(folder.anchor): "the file system root", Path.home().resolve(): "your home folder"}
    if folder in forbidden:
        return f"{folder} is {forbidden[folder]}; use a dedicated folder"
    for name, path in protected.items():
        path = path.resolve()
        if folder == path:
            return f"{folder} is {name}; use a dedicated folder"
        if folder in path.parents:
            return f"{folder} contains {name} ({path}); use a dedicated folder"
    if folder.exists() and not folder.is_dir():
        return f"{folder} exists and is not a folder"
    if folder.is_dir() and not is_owned(folder) and any(folder.iterdir()):
        return (f"{folder} holds files that vit-gallery did not write (no {MARKER} marker from an earlier build); "
                f"choose a new or empty folder for {role}")
    return None


def claim_folder(folder: Path, role: str) -> None:
    """Create ``folder`` if needed and mark it as the tool's own."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    if not marker.is_file():
        from .atomic import atomic_write_text

        atomic_write_text(marker, json.dumps({"tool": "vit-gallery", "role": role}) + "\n")
