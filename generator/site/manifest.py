"""The hash manifest of a build: what a reader checks a published gallery against (``vit-gallery verify``).

``<output>/manifest.json`` (and the same bytes as ``<site>/manifest.json``) lists the SHA-256
of every file the build published: the Markdown pages, data files, tables, figures and explorer
files under ``<output>/docs``, and every file of the built site. It also records the run
report's hash, the config file's, each model's weights hash, the device and the package versions,
and ends with the hash of all of that (``sha256``), so an edited or truncated manifest is told
apart from a gallery that differs from it. It is written atomically, after the site, as the
build's last step.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..store.atomic import atomic_write_text
from ..store.cache import canonical_json

__all__ = ["MANIFEST", "FORMAT", "file_hashes", "manifest_digest", "sha256_file", "write_manifest"]

#: The manifest's file name, in the output folder and at the site's root.
MANIFEST = "manifest.json"
FORMAT = "vit-gallery-manifest/1"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def listed_files(root: Path) -> list[Path]:
    """Every file under ``root`` that a manifest lists: not the manifest, no hidden files (markers, temporaries)."""
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and rel.as_posix() != MANIFEST and not any(p.startswith(".") for p in rel.parts):
            out.append(path)
    return sorted(out)


def file_hashes(root: Path) -> dict[str, str]:
    """Relative POSIX path → SHA-256 of every file :func:`listed_files` finds under ``root``."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in listed_files(root)}


def manifest_digest(manifest: dict[str, Any]) -> str:
    """The hash a manifest ends with: SHA-256 of its canonical JSON without the ``sha256`` key."""
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def write_manifest(output: Path, run_report: dict[str, Any], site_dir: Path | None,
                   device: str) -> dict[str, Any]:
    """Hash the published files of a build and write the manifest (output folder, and the site when built).

    Args:
        output: the build's output folder (``docs/`` and ``run_report.json`` inside).
        run_report: the run report as written (:func:`generator.pipeline.report.run_report_dict`).
        site_dir: the built site, or None when no site was built.
        device: the ``[run] device`` the build ran with.
    """
    config = run_report.get("config")
    report_path = output / "run_report.json"
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "generator": run_report.get("generator"),
        "config": config,
        "config_sha256": sha256_file(Path(config)) if config and Path(config).is_file() else None,
        "run_report_sha256": sha256_file(report_path) if report_path.is_file() else None,
        "device": device,
        "models": {m["name"]: m["weights_sha256"] for m in run_report.get("models", [])},
        "environment": run_report.get("environment", {}),
        "executor": run_report.get("executor"),
        "site_dir": str(site_dir) if site_dir is not None else None,
        "docs": file_hashes(output / "docs"),
        "site": file_hashes(site_dir) if site_dir is not None else None,
    }
    manifest = json.loads(json.dumps(manifest, default=str))  # exactly what a reader will load
    manifest["sha256"] = manifest_digest(manifest)
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    atomic_write_text(output / MANIFEST, text)
    if site_dir is not None:
        atomic_write_text(site_dir / MANIFEST, text)
    return manifest
