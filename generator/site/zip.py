"""Zip a built site into one file for sharing: ``python -m generator.site.zip SITE_DIR ZIP``.

The archive is deterministic: entries sorted by path, fixed timestamps and modes, so the same
site gives the same bytes. It opens from disk: unzip and open ``index.html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..store.atomic import write_if_changed
from .pages import deterministic_zip


def zip_site(site_dir: Path, target: Path, folder: str = "site") -> Path:
    """Write every file of ``site_dir`` into ``target`` under ``folder/``; return ``target``."""
    site_dir = site_dir.resolve()
    if not (site_dir / "index.html").is_file():
        raise FileNotFoundError(f"{site_dir} has no index.html: build the site first (make site)")
    target = target.resolve()
    files = [(f"{folder}/{p.relative_to(site_dir).as_posix()}", p) for p in site_dir.rglob("*")
             if p.is_file() and p.resolve() != target and p.name != ".vit-gallery"]
    write_if_changed(target, deterministic_zip(files))
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m generator.site.zip SITE_DIR ZIP", file=sys.stderr)
        return 2
    try:
        target = zip_site(Path(args[0]), Path(args[1]))
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
