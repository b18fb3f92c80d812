"""The config's types: the base of every table, the top-level tables, and how errors become one message.

This module imports nothing else of the generator, so every layer can use the config types
(:mod:`generator.config.loading` loads and assembles them).

Each section and each relevance method declares its own settings class next to its code, as a
subclass of :class:`SectionSettings` with its limits on the fields (pydantic v2). The config's
``[sections]`` and ``[methods]`` tables are assembled from those registries
(:mod:`generator.config.loading`). Scalars are strict (``"1"`` is not an integer, ``1`` is not ``true``);
floats must be finite everywhere. A :class:`pydantic.ValidationError` is turned into a
:class:`ConfigError` that names the file and the dotted key, with a "did you mean" for typos.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, Strict, StrictBool, StrictStr, ValidationError,
                      field_validator, model_validator)

__all__ = ["BatchSize", "Bool", "ConfigError", "DatasetConfig", "Float", "GalleryConfig", "Int", "ModelConfig", "RunConfig",
           "SectionSettings", "Settings", "Str", "config_error", "method_field", "suggest"]

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # ints are accepted for floats; strings are not
Bool = StrictBool
Str = StrictStr


def _positive_batch(value: int | str) -> int | str:
    if value != "auto" and value < 1:
        raise ValueError(f"must be ≥ 1 or \"auto\", got {value}")
    return value


#: Images per forward pass: a positive integer, or "auto" (picked from the model's FLOPs and device).
BatchSize = Annotated[Union[Literal["auto"], Annotated[int, Strict()]], AfterValidator(_positive_batch)]


class ConfigError(ValueError):
    """A configuration problem. ``str(err)`` is the complete user-facing message."""

    def __init__(self, file: str | Path | None, key: str, message: str):
        self.file = str(file) if file is not None else "<config>"
        self.key = key
        self.message = message
        super().__init__(f"{self.file}: [{key}] {message}" if key else f"{self.file}: {message}")


class Settings(BaseModel):
    """A frozen, validated config table: unknown keys and non-finite numbers are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, arbitrary_types_allowed=True)


class SectionSettings(Settings):
    """Settings of one gallery section or relevance method; every one can be switched off."""

    enabled: Bool = True


def suggest(word: str, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest option, or ``""``."""
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the model found by walking ``loc`` from ``model`` (for "did you mean")."""
    for part in loc:
        by_key = {(info.alias or name): info for name, info in model.model_fields.items()} if model else {}
        if model is None or not isinstance(part, str) or part not in by_key:
            return []
        annotation = by_key[part].annotation
        candidates = [a for a in (typing.get_args(annotation) or (annotation,))
                      if isinstance(a, type) and issubclass(a, BaseModel)]
        model = candidates[0] if candidates else None
    return [info.alias or name for name, info in model.model_fields.items()] if model is not None else []


_KINDS = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
          "float_type": "a number", "float_parsing": "a number", "bool_type": "true/false",
          "bool_parsing": "true/false", "string_type": "a string", "tuple_type": "a list", "list_type": "a list",
          "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table",
          "path_type": "a path string"}


_TAG_PREFIXES = ("literal[", "function-", "constrained-", "tuple[", "dict[", "list[", "union[", "nullable[")


def _is_tag(part: Any) -> bool:
    """Whether a location part names a union member (pydantic appends one per member), not a key."""
    return isinstance(part, str) and (part.startswith(_TAG_PREFIXES) or part in ("int", "float", "str", "bool", "none"))


def _describe_arm(tag: str) -> str:
    """A union arm's tag (``int``, ``literal['auto']``) in words."""
    if tag.startswith("literal["):
        return tag[len("literal["):-1]
    if tag.startswith("constrained-"):
        tag = tag[len("constrained-"):]
    return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true/false",
            "tuple[int, ...]": "a list of integers"}.get(tag, tag)


def config_error(exc: ValidationError, model: type[BaseModel], prefix: str, source: Path | None) -> ConfigError:
    """The first problem of ``exc`` as a :class:`ConfigError` naming the dotted key under ``prefix``."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    # Union members report one error each, with the member's tag appended to the location.
    field_loc = tuple(p for p in loc if not _is_tag(p))
    arms: list[str] = []
    if len(errors) > 1 and _is_tag(loc[-1]) and all(tuple(p for p in e["loc"] if not _is_tag(p)) == field_loc
                                                   for e in errors):
        arms = [_describe_arm(str(e["loc"][-1])) for e in errors]
    key = ".".join([prefix] if prefix else [])
    for part in field_loc:
        key = f"{key}[{part}]" if isinstance(part, int) else (f"{key}.{part}" if key else str(part))
    kind, value = first["type"], first.get("input")
    ctx = first.get("ctx") or {}
    if arms:
        literals = [a for a in arms if a.startswith("'")]
        hint = suggest(value, [a.strip("'") for a in literals]) if isinstance(value, str) else ""
        expected = " or ".join(dict.fromkeys(arms))
        literal_error = next((e for e in errors if e["type"] in ("greater_than_equal", "greater_than", "less_than",
                                                                   "less_than_equal")), None)
        if literal_error is not None:  # the value had the right type but not the right size
            return config_error(ValidationError.from_exception_data(exc.title, [literal_error]), model, prefix, source)
        return ConfigError(source, key, f"expected {expected}, got {value!r}{hint}")
    if kind == "extra_forbidden":
        return ConfigError(source, key, f"unknown key{suggest(str(loc[-1]), _fields_at(model, loc[:-1]))}")
    if kind == "missing":
        return ConfigError(source, key, "missing required key")
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        hint = suggest(value, options) if isinstance(value, str) else ""
        return ConfigError(source, key, f"expected {expected}, got {value!r}{hint}")
    if kind == "finite_number":
        return ConfigError(source, key, f"expected a finite number, got {value!r}")
    bounds = {"greater_than_equal": ("≥", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("≤", "le"),
              "less_than": ("<", "lt")}
    if kind in bounds:
        sign, name = bounds[kind]
        return ConfigError(source, key, f"must be {sign} {ctx.get(name)}, got {value!r}")
    if kind in ("too_short", "too_long"):
        return ConfigError(source, key, first["msg"].replace("List", "list").replace("Tuple", "list"))
    if kind == "value_error":
        return ConfigError(source, key, str(ctx.get("error", first["msg"])))
    if kind in _KINDS:
        return ConfigError(source, key, f"expected {_KINDS[kind]}, got {value!r}")
    return ConfigError(source, key, f"{first['msg']}, got {value!r}")


def method_field(name: str) -> str:
    """The attribute of ``config.methods`` that holds relevance method ``name``'s settings (dashes → underscores)."""
    return name.replace("-", "_")


# --------------------------------------------------------------------------- the top-level tables


class ModelConfig(Settings):
    """One model of the gallery.

    ``weights`` is ``"hub"`` (timm's pretrained weights: from the Hugging Face hub, or the file that
    ships inside this package for the embedded models),
    ``"file:PATH"`` (a local .safetensors, .pth/.bin or .npz loaded through timm's pretrained
    path) or ``"random:SEED"`` (seeded random init, labelled "random weights" everywhere).
    ``arch`` is a timm architecture, optionally with a pretrained tag (``name.tag``), or ``hf:REPO``, a
    transformers checkpoint (:mod:`generator.families.hf_loading`): a hub repository or a ``save_pretrained``
    folder, whose ``file:`` weights are such a folder.
    ``labels`` is ``"auto"`` (the weights' own: timm's ImageNet info, or the pretrained
    config's label names), or an explicit list of class names.
    ``num_classes`` resizes the head (a new random head); 0 builds the headless backbone.
    ``img_size`` is the input size (one int, or [height, width]) passed to timm as ``img_size``:
    timm resamples pretrained position embeddings to it, and the preprocessing follows.
    ``timm_kwargs`` are further keyword arguments of ``timm.create_model`` (e.g. ``depth``,
    ``embed_dim``: a small random model for a quick test); with pretrained weights they must fit them.
    """

    name: Str
    arch: Str
    weights: Str = "hub"
    labels: Union[Literal["auto"], tuple[Str, ...]] = "auto"
    num_classes: Int | None = Field(default=None, ge=0)
    img_size: Union[Annotated[int, Strict(), Field(ge=8)],
                    Annotated[tuple[Annotated[int, Strict(), Field(ge=8)], ...], Field(min_length=2, max_length=2)],
                    None] = None
    timm_kwargs: dict[Str, Union[StrictBool, Int, Float, Str, tuple[Union[Int, Float], ...]]] = {}

    @field_validator("timm_kwargs")
    @classmethod
    def _kwargs_not_owned(cls, value: dict) -> dict:
        owned = {"pretrained": "weights", "num_classes": "num_classes", "img_size": "img_size",
                 "pretrained_cfg": "weights", "pretrained_cfg_overlay": "weights"}
        for key in value:
            if key in owned:
                raise ValueError(f"{key!r} is set by this model's own key {owned[key]!r}, not by timm_kwargs")
        return value

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("labels")
    @classmethod
    def _labels_not_empty(cls, value):
        if value != "auto" and not value:
            raise ValueError("an explicit label list must not be empty")
        return value

    @model_validator(mode="after")
    def _headless_has_no_labels(self) -> "ModelConfig":
        if self.num_classes == 0 and self.labels != "auto":
            raise ValueError("labels: a headless model (num_classes = 0) has no classes to name")
        return self

    @model_validator(mode="after")
    def _timm_keys_on_timm_models(self) -> "ModelConfig":
        if self.is_hf:
            for key in ("num_classes", "img_size"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: applies to timm architectures; an hf: model's config.json and image "
                                     "processor set its head and input size")
            if self.timm_kwargs:
                raise ValueError("timm_kwargs: applies to timm architectures, not to an hf: model")
        return self

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) from ``img_size``, or None for the architecture's default."""
        if self.img_size is None:
            return None
        return (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)

    @property
    def is_hf(self) -> bool:
        """``arch = "hf:REPO"``: a Hugging Face transformers checkpoint (a hub repository or a save_pretrained folder)."""
        return self.arch.startswith("hf:")

    @property
    def weights_kind(self) -> str:
        return self.weights.split(":", 1)[0]

    @property
    def weights_arg(self) -> str:
        return self.weights.split(":", 1)[1] if ":" in self.weights else ""


class RunConfig(Settings):
    """How the batch runs."""

    seed: Int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "cpu"
    fail_fast: Bool = False
    #: Figure resolution for the site (PNG). Screen resolution (matplotlib's own default): figures are
    #: shown at most 640 CSS pixels wide, and the default gallery's PNGs at 150 dpi were 17 of its 42 MB.
    #: Print resolution is the export's (``vit-gallery figures --dpi 300``). PDFs are vector.
    dpi: Int = 100
    #: Also write every figure as a PDF beside its PNG. Off for the site: the PDFs were a quarter of the
    #: default gallery's bytes, for readers who print; ``vit-gallery figures`` always writes them.
    pdf: Bool = False

    @field_validator("dpi")
    @classmethod
    def _dpi_range(cls, value: int) -> int:
        if not 50 <= value <= 1200:
            raise ValueError(f"must be between 50 and 1200, got {value}")
        return value


class DatasetConfig(Settings):
    """Dataset mode: ``images`` is a class-folder dataset (ImageFolder layout, ``<images>/<class>/<image>``).

    Every image gets its data files and enters the chapters' aggregates (accuracy against the
    folder's label among them); only ``sample`` images get pages and figures: every image some
    model misclassifies, then the others by a rank seeded with ``seed``, up to ``sample``.
    """

    enabled: Bool = False
    sample: Int = Field(default=50, ge=0)
    seed: Int = 0


class GalleryConfig(Settings):
    """The whole configuration. ``sections`` and ``methods`` are the assembled registry tables."""

    title: Str
    images: Path
    models: tuple[ModelConfig, ...]
    output: Path = Path("build")
    site_dir: Path = Path("site")
    description: Str = ""
    run: RunConfig = RunConfig()
    dataset: DatasetConfig = DatasetConfig()
    sections: Any = None
    methods: Any = None
    #: The file this config came from (None when built in code).
    source: Path | None = None
