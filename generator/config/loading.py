"""Typed, validated configuration: one TOML file → frozen pydantic models.

The top level (title, images, models, run, folders) is declared in :mod:`generator.config.settings`.
The ``[sections]`` and ``[methods]`` tables are assembled here from the tables that sections
and relevance methods register (:mod:`generator.config.schema`): each owns its settings class, next to
its code, with its limits on the fields.
Everything is checked before any heavy work starts. Each problem raises :class:`ConfigError`,
which names the file and the dotted key, and suggests the closest valid key for typos.
Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, create_model

from ..store.safepaths import folder_problem
from .schema import Table, registered_tables
from .settings import (ConfigError, GalleryConfig, ModelConfig, RunConfig, SectionSettings, Settings, config_error,
                       method_field, suggest)

__all__ = ["ConfigError", "GalleryConfig", "ModelConfig", "RunConfig", "SectionSettings", "Settings", "load_config",
           "method_field", "methods_model", "parse_config", "sections_model"]


def sections_model() -> type[Settings]:
    """The ``[sections]`` table: one field per registered section, typed by the section's own settings."""
    return _tables_model("SectionsConfig", registered_tables("sections"))


def methods_model() -> type[Settings]:
    """The ``[methods]`` table: one field per registered relevance method (its own settings)."""
    return _tables_model("MethodsConfig", registered_tables("methods"))


@functools.cache
def _tables_model(title: str, tables: tuple[Table, ...]) -> type[Settings]:
    # names may hold dashes ("gradient-rollout"): the field is its identifier, the key its alias
    return create_model(title, __base__=Settings, __module__=__name__,
                        **{method_field(t.name): (t.settings, Field(default=t.settings(), alias=t.name))
                           for t in tables})


# --------------------------------------------------------------------------- loading

_PATH_FIELDS = ("images", "output", "site_dir")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> GalleryConfig:
    """Read and validate a TOML config.

    Args:
        path: the TOML file.
        overrides: dotted keys → values applied over the file (from CLI options).

    Raises:
        ConfigError: for a missing or unparsable file and for every invalid key or value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "", "config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return parse_config(data, source=path.resolve())


def _validated(model: type[BaseModel], data: Any, prefix: str, source: Path | None) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(source, prefix, f"expected a table, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, model, prefix, source) from None


def parse_config(data: dict[str, Any], source: Path | None = None) -> GalleryConfig:
    """Validate a config mapping (already parsed from TOML) into a :class:`GalleryConfig`."""
    base = source.parent if source is not None else Path.cwd()
    data = dict(data)
    if "source" in data:
        raise ConfigError(source, "source", f"unknown key{suggest('source', GalleryConfig.model_fields)}")
    sections = _validated(sections_model(), data.pop("sections", {}), "sections", source)
    methods = _validated(methods_model(), data.pop("methods", {}), "methods", source)
    if "models" in data and not isinstance(data["models"], list):
        raise ConfigError(source, "models", "expected an array of tables ([[models]])")
    for i, entry in enumerate(data.get("models", [])):
        _validated(ModelConfig, entry, f"models[{i}]", source)  # names the entry's index in errors
    top = _validated(GalleryConfig, data, "", source)
    resolved = {name: _resolve(base, getattr(top, name)) for name in _PATH_FIELDS}
    sections = _resolve_section_paths(sections, base)
    cfg = top.model_copy(update={**resolved, "sections": sections, "methods": methods, "source": source,
                                 "models": tuple(_resolve_weights(m, base) for m in top.models)})
    _check_semantics(cfg, source, base)
    return cfg


def _resolve(base: Path, value: Path) -> Path:
    return value if value.is_absolute() else (base / value).resolve()


def _resolve_section_paths(sections: Settings, base: Path) -> Settings:
    """Every Path field of a section's settings is relative to the config file's folder."""
    updates = {}
    for name in type(sections).model_fields:
        table = getattr(sections, name)
        paths = {f: _resolve(base, getattr(table, f)) for f, info in type(table).model_fields.items()
                 if info.annotation is Path}
        if paths:
            updates[name] = table.model_copy(update=paths)
    return sections.model_copy(update=updates) if updates else sections


def _resolve_weights(model: ModelConfig, base: Path) -> ModelConfig:
    if model.weights_kind == "file" and model.weights_arg:
        model = model.model_copy(update={"weights": f"file:{_resolve(base, Path(model.weights_arg))}"})
    folder = base / model.arch[3:] if model.is_hf else None
    if folder is not None and not Path(model.arch[3:]).is_absolute() and folder.is_dir():
        # an hf: checkpoint that is a folder next to the config, as from_pretrained would find it
        model = model.model_copy(update={"arch": f"hf:{folder.resolve()}"})
    return model


def _check_semantics(cfg: GalleryConfig, source: Path | None, base: Path) -> None:
    if not cfg.images.is_dir():
        raise ConfigError(source, "images", f"image folder not found: {cfg.images}")
    if not cfg.models:
        raise ConfigError(source, "models", "at least one [[models]] entry is needed")
    seen: dict[str, int] = {}
    for i, model in enumerate(cfg.models):
        key = f"models[{i}]"
        if model.name in seen:
            raise ConfigError(source, f"{key}.name", f"duplicate model name {model.name!r} (also models[{seen[model.name]}])")
        seen[model.name] = i
        _check_weights(model, f"{key}.weights", source)
    for table in registered_tables("sections"):
        if table.check is not None:
            table.check(cfg, source)
    _check_folders(cfg, source)


def _check_folders(cfg: GalleryConfig, source: Path | None) -> None:
    """``output`` and ``site_dir`` are folders the tool owns (or new, or empty), apart from each other,
    and hold none of the user's inputs."""
    protected = {"the image folder": cfg.images}
    if source is not None:
        protected["the config file's folder"] = source.parent
        protected["the config file"] = source
    for i, model in enumerate(cfg.models):
        if model.weights_kind == "file":
            protected[f"models[{i}].weights"] = Path(model.weights_arg)
    output, site = cfg.output.resolve(), cfg.site_dir.resolve()
    for key, folder, role in (("output", output, "output"), ("site_dir", site, "site_dir")):
        problem = folder_problem(folder, role, protected)
        if problem:
            raise ConfigError(source, key, problem)
    if site == output:
        raise ConfigError(source, "site_dir", "must not be the output folder; give each its own folder")
    if site in output.parents:
        raise ConfigError(source, "site_dir", f"{site} contains the output folder {output}: mkdocs would wipe it")
    if (output / "docs") == site or (output / "docs") in site.parents:
        raise ConfigError(source, "site_dir", f"{site} lies inside the pages folder {output / 'docs'}")


def _check_weights(model: ModelConfig, key: str, source: Path | None) -> None:
    kind, arg = model.weights_kind, model.weights_arg
    if kind == "hub":
        if arg:
            raise ConfigError(source, key, "'hub' takes no argument; the architecture names the weights")
    elif kind == "file" and model.is_hf:
        if not arg or not Path(arg).is_dir():
            raise ConfigError(source, key, f"hf: weights are a save_pretrained folder; not found: {arg or '(empty)'}")
    elif kind == "file":
        path = Path(arg) if arg else None
        if path is None or not path.is_file():
            raise ConfigError(source, key, f"weights file not found: {arg or '(empty)'}")
        if not path.name.endswith((".safetensors", ".pth", ".pt", ".bin", ".npz")):
            raise ConfigError(source, key, f"unsupported weights format {path.suffix!r}: use .safetensors, .pth/.bin or .npz")
    elif kind == "random":
        try:
            int(arg)
        except ValueError:
            raise ConfigError(source, key, f"'random:SEED' needs an integer seed, got {arg!r}") from None
    else:
        hint = suggest(kind, ["hub", "file", "random"])
        raise ConfigError(source, key, f"unknown weights source {kind!r}{hint}; use 'hub', 'file:PATH' or 'random:SEED'")


def __getattr__(name: str) -> Any:
    """``SectionsConfig`` and ``MethodsConfig``, the assembled tables, by name: so that a config can be
    pickled into worker processes (pickle finds classes by module and name)."""
    if name == "SectionsConfig":
        return sections_model()
    if name == "MethodsConfig":
        return methods_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
