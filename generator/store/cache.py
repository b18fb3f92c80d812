"""A content-addressed result store with atomic writes and success stamps.

Each entry lives in ``<root>/<key[:2]>/<key>/``: ``arrays.npz`` (no pickles), ``meta.json``,
and an ``ok`` stamp written last. An entry without its stamp, or one that fails to load, is
treated as absent, deleted, and recomputed: a killed run can never leave a half entry that
is later read.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_text


@dataclass
class Record:
    """A section's result for one model × image: small arrays plus JSON metadata."""

    section: str
    model: str
    image: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) for hashing and byte-stable outputs."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def cache_key(**parts: Any) -> str:
    """SHA-256 over the canonical JSON of ``parts``."""
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()


class ResultCache:
    """Store and fetch :class:`Record` objects by key. ``enabled=False`` makes every lookup miss."""

    def __init__(self, root: Path, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self.discarded = 0

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Record | None:
        """The stored record, or None (missing, unstamped or corrupt entries count as misses)."""
        folder = self._dir(key)
        if not self.enabled or not (folder / "ok").is_file():
            self.misses += 1
            return None
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            stamp = (folder / "ok").read_text(encoding="utf-8").strip()
            with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            if stamp != _digest(folder):
                raise ValueError("content does not match its stamp")
        except Exception:  # any unreadable entry is discarded and recomputed
            shutil.rmtree(folder, ignore_errors=True)
            self.discarded += 1
            self.misses += 1
            return None
        self.hits += 1
        return Record(section=meta["section"], model=meta["model"], image=meta["image"],
                      arrays=arrays, meta=meta["meta"])

    def put(self, key: str, record: Record) -> None:
        """Write ``record`` under ``key``; the stamp goes last, so readers never see a partial entry."""
        if not self.enabled:
            return
        folder = self._dir(key)
        (folder / "ok").unlink(missing_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **record.arrays)
        atomic_write_bytes(folder / "arrays.npz", buffer.getvalue())
        meta = {"section": record.section, "model": record.model, "image": record.image, "meta": record.meta}
        atomic_write_text(folder / "meta.json", canonical_json(meta))
        atomic_write_text(folder / "ok", _digest(folder) + "\n")

    def has(self, key: str) -> bool:
        """Whether a stamped entry exists for ``key`` (not read nor checked, and not counted: :meth:`get` does that)."""
        return self.enabled and (self._dir(key) / "ok").is_file()

    def has_stamp(self, key: str, name: str) -> bool:
        """Whether an extra success stamp (e.g. "figures") exists for ``key``."""
        return self.enabled and (self._dir(key) / f"{name}.ok").is_file()

    def read_stamp(self, key: str, name: str) -> str:
        """The content of an extra stamp written by :meth:`stamp`."""
        return (self._dir(key) / f"{name}.ok").read_text(encoding="utf-8")

    def stamp(self, key: str, name: str, content: str = "") -> None:
        if self.enabled:
            atomic_write_text(self._dir(key) / f"{name}.ok", content)

    def size_bytes(self) -> int:
        if not self.root.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ("arrays.npz", "meta.json"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()
