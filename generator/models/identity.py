"""A model's identity, apart from its runtime: what cache keys and pages need, importable without torch.

:class:`ModelIdentity` holds the family, data config, class names, weights hash, source and
structure of a configured model. The memo under ``<output>/cache/models/`` serves it without
loading the weights when the weights file is unchanged (path, size, inode, mtime), so a build
whose results are all cached never imports torch or timm nor reads the weights. Each memo
carries a SHA-256 of its content; an edited or damaged memo is discarded and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .._version import __version__
from ..store.atomic import atomic_write_text
from ..store.cache import cache_key, canonical_json
from ..config.settings import ModelConfig

__all__ = ["Family", "ModelIdentity", "WeightsError", "identity_key", "read_memo", "write_memo"]

#: A registered model family's name (:mod:`generator.families`), as results and cache keys record it.
Family = str


class WeightsError(RuntimeError):
    """Weights could not be obtained or do not fit the architecture."""


@dataclass(frozen=True)
class ModelIdentity:
    """What is known about a model without running it.

    Attributes:
        family: the name of the model's family adapter (:func:`generator.families.family_of`).
        data_config: timm's resolved data config (input_size, mean, std, interpolation, crop).
        class_names: one name per output class.
        weights_sha256: SHA-256 over the state dict (names, dtypes, shapes, bytes).
        source: a human description of where the weights came from.
        random_weights: True for ``random:SEED``; every page and figure says so.
        structure: blocks, heads and grid in words (for the pages).
        timm_name: the timm ``name.tag`` whose pretrained config set the preprocessing and labels
            (the tag timm resolved when the config names none).
        capabilities: what this model has (:data:`generator.families.CAPABILITIES`), as its family
            adapter read it off the module: a headless backbone lacks ``"classifier-head"``, a ViT
            pooled without a class token lacks ``"class-token"``.
    """

    family: Family
    data_config: dict
    class_names: tuple[str, ...]
    weights_sha256: str
    source: str
    random_weights: bool
    structure: str
    timm_name: str = ""
    capabilities: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return json.loads(canonical_json({f.name: getattr(self, f.name) for f in fields(self)}))

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> "ModelIdentity":
        values = {f.name: saved[f.name] for f in fields(cls)}
        values["data_config"] = {k: _tuples(v) for k, v in values["data_config"].items()}
        values["class_names"] = tuple(values["class_names"])
        values["capabilities"] = tuple(values["capabilities"])
        return cls(**values)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _folder_files(path: Path) -> dict[str, Any]:
    """Size, mtime and inode of each file of a folder (a save_pretrained folder's files change in place)."""
    if not path.is_dir():
        return {}
    return {"files": {f.name: [f.stat().st_size, f.stat().st_mtime_ns, f.stat().st_ino]
                      for f in sorted(path.iterdir()) if f.is_file()}}


def identity_key(config: ModelConfig) -> str | None:
    """What the model's identity depends on, hashed; None when it cannot be known without loading.

    ``file:`` weights are identified by their path, size, inode and mtime (a changed file loads
    again), a ``save_pretrained`` folder also by its files'; ``random:`` by the seed (and an ``hf:`` folder's
    files). Hub weights and configs can change under the same name: always loaded.
    """
    if config.weights_kind == "file":
        path = Path(config.weights_arg)
        try:
            stat = path.stat()
        except OSError:
            return None
        weights: Any = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                        "inode": stat.st_ino, **_folder_files(path)}
    elif config.weights_kind == "random" and config.is_hf:
        folder = Path(config.arch[3:])
        if not folder.is_dir():
            return None  # the architecture comes from the hub's config, which can change
        weights = {"seed": config.weights_arg, **_folder_files(folder)}
    elif config.weights_kind == "random":
        weights = {"seed": config.weights_arg}
    else:
        return None
    libraries = {"transformers": _package("transformers")} if config.is_hf else {"timm": _package("timm")}
    return cache_key(kind="model-identity", generator=__version__, config=config.model_dump(), weights=weights,
                     torch=_package("torch"), **libraries)


def _digest(identity: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()


def read_memo(memo: Path) -> ModelIdentity | None:
    """The identity stored in ``memo`` if it is there and intact; a damaged or edited memo is deleted."""
    if not memo.is_file():
        return None
    try:
        envelope = json.loads(memo.read_text(encoding="utf-8"))
        saved = envelope["identity"]
        if envelope["sha256"] != _digest(saved):
            raise ValueError("memo content does not match its hash")
        return ModelIdentity.from_json(saved)
    except (ValueError, KeyError, TypeError, OSError):
        memo.unlink(missing_ok=True)
        return None


def write_memo(memo: Path, identity: ModelIdentity) -> None:
    """Store ``identity`` with the SHA-256 of its content (atomic)."""
    saved = identity.to_json()
    memo.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(memo, canonical_json({"identity": saved, "sha256": _digest(saved)}))
