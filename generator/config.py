"""Typed, validated configuration: one TOML file → frozen dataclasses.

Everything is checked before any heavy work starts. Each problem raises :class:`ConfigError`,
which names the file and the dotted key, and suggests the closest valid key for typos.
Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from .safepaths import PathError, confined, folder_problem

__all__ = [
    "ConfigError",
    "FaithfulnessConfig",
    "GalleryConfig",
    "HeadsConfig",
    "RolloutConfig",
    "LimeConfig",
    "ModelConfig",
    "PerturbConfig",
    "ProbeConfig",
    "RunConfig",
    "SectionsConfig",
    "SwinConfig",
    "load_config",
    "parse_config",
]


class ConfigError(ValueError):
    """A configuration problem. ``str(err)`` is the complete user-facing message."""

    def __init__(self, file: str | Path | None, key: str, message: str):
        self.file = str(file) if file is not None else "<config>"
        self.key = key
        self.message = message
        super().__init__(f"{self.file}: [{key}] {message}" if key else f"{self.file}: {message}")


# --------------------------------------------------------------------------- sections

#: lime's segmentation algorithms with lime's own default parameters.
LIME_SEGMENTATIONS: dict[str, dict] = {
    "quickshift": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    "slic": {"n_segments": 50, "compactness": 10.0, "sigma": 1.0},
    "felzenszwalb": {"scale": 100.0, "sigma": 0.5, "min_size": 50},
}


@dataclass(frozen=True)
class HeadsConfig:
    """Per-head attention grids (the study's Figure 1), ViT family only."""

    enabled: bool = True
    #: Which query token's attention is drawn: "cls", "mean" (mean over patch queries),
    #: or an integer patch index (row-major over the patch grid).
    query: Union[Literal["cls", "mean"], int] = "cls"
    #: Colour scale shared per block row ("row") or stretched per panel ("panel").
    scale: Literal["row", "panel"] = "row"


@dataclass(frozen=True)
class RolloutConfig:
    """Attention rollout (the study's Figures 2 and 3), ViT family only."""

    enabled: bool = True
    #: Head fusions drawn side by side (Figure 2).
    fusions: tuple[Literal["mean", "max", "min"], ...] = ("mean", "max", "min")
    #: Discard ratios; more than one gives a small sweep (one row each).
    discard_ratios: tuple[float, ...] = (0.9,)
    #: First block included (the study skips block 0).
    start_block: int = 1
    normalize: bool = False
    #: Fusion used for the progression strip over blocks (Figure 3).
    progression_fusion: Literal["mean", "max", "min"] = "mean"
    #: Gradient-weighted rollout (Chefer et al. 2021) for the predicted class.
    gradient: bool = True
    gradient_start_block: int = 0


@dataclass(frozen=True)
class SwinConfig:
    """Swin window-attention maps (the study's Figure 4) and the Swin rollout, Swin family only."""

    enabled: bool = True
    #: Blocks drawn as window maps, as [stage, block] pairs counted from 1 (the study: stage 3, block 1).
    #: Pairs a model does not have are skipped, and the page says so.
    targets: tuple[tuple[int, ...], ...] = ((3, 1), (1, 1))
    #: The query patch inside every window: "center" or [row, col] within the window.
    query: Union[Literal["center"], tuple[int, ...]] = "center"
    #: "overlay" (maps on the image), "raw" (maps alone) or "both".
    style: Literal["overlay", "raw", "both"] = "overlay"
    rollout: bool = True
    rollout_fusion: Literal["mean", "max", "min"] = "mean"
    rollout_discard_ratio: float = 0.9
    rollout_normalize: bool = False


@dataclass(frozen=True)
class LimeConfig:
    """LIME region explanations (the study's Figure 5), every model. Defaults follow lime's own."""

    enabled: bool = True
    num_samples: int = 1000
    top_labels: int = 2
    num_features: int = 5
    #: Images per forward pass of the classifier function; "auto" picks by the model's FLOPs and device (see README).
    batch_size: Union[int, Literal["auto"]] = "auto"
    segmentation: Literal["quickshift", "slic", "felzenszwalb"] = "quickshift"
    #: Parameters over lime's defaults for the chosen segmentation (quickshift: kernel_size 4, max_dist 200, ratio 0.2).
    segmentation_params: dict[str, Union[int, float]] = field(default_factory=dict)
    #: "mean" hides each superpixel with its mean colour (lime's default), or an [r, g, b] colour.
    hide_color: Union[Literal["mean"], tuple[int, ...]] = "mean"
    seed: int = 0
    show_negative: bool = False
    show_heatmap: bool = True


@dataclass(frozen=True)
class PerturbConfig:
    """Location and size perturbations (the study's Figure 6 and Table I), every model."""

    enabled: bool = True
    #: Classes listed per variant.
    top_k: int = 3
    #: Variants declared here, by image file name: {"cat.png" = [{name = "...", edit = [{op = "move", ...}]}]}.
    #: Files ``<image>.variants.toml`` and ``<image>.variants/*.png`` next to an image add more.
    variants: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeConfig:
    """Linear-probe fine-tuning (the study's bonus chapter): frozen backbone, new head, every model × dataset."""

    enabled: bool = True
    #: name → an ImageFolder-style folder inside ``data_root``, or a built-in: "sklearn:digits", "skimage:lfw_subset".
    datasets: dict[str, str] = field(default_factory=lambda: {"digits": "sklearn:digits", "faces": "skimage:lfw_subset"})
    #: The folder dataset paths are relative to (itself relative to the config file); datasets stay inside it.
    data_root: Path = Path(".")
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    seed: int = 0
    #: Seed of the train/val/test split for trees without fixed splits.
    split_seed: int = 0
    #: Images per forward pass when extracting features; "auto" as in [sections.lime].
    feature_batch_size: Union[int, Literal["auto"]] = "auto"


@dataclass(frozen=True)
class FaithfulnessConfig:
    """Deletion/insertion scores of every map, a random baseline, and the randomisation sanity check."""

    enabled: bool = True
    #: Cells per side of the grid that deletion and insertion work on (maps are area-resampled to it).
    grid: int = 14
    #: Cells removed or revealed per step.
    step: int = 4
    deletion_baseline: Literal["mean", "blur", "zero"] = "mean"
    insertion_baseline: Literal["mean", "blur", "zero"] = "blur"
    blur_sigma: float = 5.0
    #: Images per forward pass along the curves; "auto" as in [sections.lime].
    batch_size: Union[int, Literal["auto"]] = "auto"
    random_seeds: tuple[int, ...] = (0, 1, 2)
    #: Blocks re-initialised (from the top) for the sanity check, besides the classifier head.
    randomise_blocks: int = 2
    #: A method whose map keeps a rank correlation at or above this after randomisation is flagged.
    flag_correlation: float = 0.5
    #: LIME samples for its map here (its settings otherwise follow [sections.lime]).
    lime_samples: int = 500


@dataclass(frozen=True)
class SectionsConfig:
    """One entry per gallery section; each section's issue adds its own table here."""

    heads: HeadsConfig = field(default_factory=HeadsConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    swin: SwinConfig = field(default_factory=SwinConfig)
    lime: LimeConfig = field(default_factory=LimeConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    faithfulness: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelConfig:
    """One model of the gallery.

    ``weights`` is ``"hub"`` (timm pretrained weights from the Hugging Face hub),
    ``"file:PATH"`` (a local .safetensors, .pth/.bin or .npz loaded through timm's pretrained
    path) or ``"random:SEED"`` (seeded random init, labelled "random weights" everywhere).
    ``labels`` is ``"auto"`` (the weights' own: timm's ImageNet info, or the pretrained
    config's label names), or an explicit list of class names.
    """

    name: str
    arch: str
    weights: str = "hub"
    labels: Union[Literal["auto"], tuple[str, ...]] = "auto"
    num_classes: int | None = None

    @property
    def weights_kind(self) -> str:
        return self.weights.split(":", 1)[0]

    @property
    def weights_arg(self) -> str:
        return self.weights.split(":", 1)[1] if ":" in self.weights else ""


@dataclass(frozen=True)
class RunConfig:
    """How the batch runs."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "cpu"
    fail_fast: bool = False
    #: Figure resolution for the site (PNG). PDFs are vector.
    dpi: int = 150


@dataclass(frozen=True)
class GalleryConfig:
    """The whole configuration."""

    title: str
    images: Path
    models: tuple[ModelConfig, ...]
    output: Path = Path("build")
    site_dir: Path = Path("site")
    description: str = ""
    run: RunConfig = field(default_factory=RunConfig)
    sections: SectionsConfig = field(default_factory=SectionsConfig)
    #: The file this config came from (None when built in code).
    source: Path | None = None


# --------------------------------------------------------------------------- loading

_PATH_FIELDS = {"images", "output", "site_dir"}


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
    return parse_config(data, source=path)


def parse_config(data: dict[str, Any], source: Path | None = None) -> GalleryConfig:
    """Validate a config mapping (already parsed from TOML) into a :class:`GalleryConfig`."""
    base = source.parent if source is not None else Path.cwd()
    cfg = _build(GalleryConfig, data, "", source, skip={"source"})
    resolved = {name: _resolve(base, getattr(cfg, name)) for name in _PATH_FIELDS}
    cfg = dataclasses.replace(cfg, source=source, **resolved)
    probe = cfg.sections.probe
    cfg = dataclasses.replace(cfg, sections=dataclasses.replace(
        cfg.sections, probe=dataclasses.replace(probe, data_root=_resolve(base, probe.data_root))))
    _check_semantics(cfg, source, base)
    return dataclasses.replace(cfg, models=tuple(_resolve_weights(m, base) for m in cfg.models))


def _resolve(base: Path, value: Path) -> Path:
    return value if value.is_absolute() else (base / value).resolve()


def _resolve_weights(model: ModelConfig, base: Path) -> ModelConfig:
    if model.weights_kind == "file":
        return dataclasses.replace(model, weights=f"file:{_resolve(base, Path(model.weights_arg))}")
    return model


def _check_semantics(cfg: GalleryConfig, source: Path | None, base: Path) -> None:
    if not cfg.images.is_dir():
        raise ConfigError(source, "images", f"image folder not found: {cfg.images}")
    if not cfg.models:
        raise ConfigError(source, "models", "at least one [[models]] entry is needed")
    seen: dict[str, int] = {}
    for i, model in enumerate(cfg.models):
        key = f"models[{i}]"
        if not model.name.strip():
            raise ConfigError(source, f"{key}.name", "must not be empty")
        if model.name in seen:
            raise ConfigError(source, f"{key}.name", f"duplicate model name {model.name!r} (also models[{seen[model.name]}])")
        seen[model.name] = i
        _check_weights(model, f"{key}.weights", source, base)
        if model.labels != "auto" and not model.labels:
            raise ConfigError(source, f"{key}.labels", "an explicit label list must not be empty")
        if model.num_classes is not None and model.num_classes < 1:
            raise ConfigError(source, f"{key}.num_classes", "must be ≥ 1")
    if cfg.run.dpi < 50 or cfg.run.dpi > 1200:
        raise ConfigError(source, "run.dpi", f"must be between 50 and 1200, got {cfg.run.dpi}")
    rollout = cfg.sections.rollout
    if not rollout.fusions:
        raise ConfigError(source, "sections.rollout.fusions", "name at least one fusion")
    if not rollout.discard_ratios:
        raise ConfigError(source, "sections.rollout.discard_ratios", "name at least one discard ratio")
    for i, ratio in enumerate(rollout.discard_ratios):
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(source, f"sections.rollout.discard_ratios[{i}]", f"must be in [0, 1), got {ratio}")
    for key in ("start_block", "gradient_start_block"):
        if getattr(rollout, key) < 0:
            raise ConfigError(source, f"sections.rollout.{key}", "must be ≥ 0")
    swin = cfg.sections.swin
    for i, target in enumerate(swin.targets):
        if len(target) != 2 or min(target) < 1:
            raise ConfigError(source, f"sections.swin.targets[{i}]", f"expected [stage, block], both ≥ 1, got {list(target)}")
    if swin.query != "center" and (len(swin.query) != 2 or min(swin.query) < 0):
        raise ConfigError(source, "sections.swin.query", f"expected \"center\" or [row, col] ≥ 0, got {swin.query!r}")
    if not 0.0 <= swin.rollout_discard_ratio < 1.0:
        raise ConfigError(source, "sections.swin.rollout_discard_ratio", f"must be in [0, 1), got {swin.rollout_discard_ratio}")
    lime = cfg.sections.lime
    for key, low in (("num_samples", 2), ("num_features", 1), ("top_labels", 1), ("batch_size", 1)):
        if getattr(lime, key) != "auto" and getattr(lime, key) < low:
            raise ConfigError(source, f"sections.lime.{key}", f"must be ≥ {low}, got {getattr(lime, key)}")
    for name, value in lime.segmentation_params.items():
        key = f"sections.lime.segmentation_params.{name}"
        if name not in LIME_SEGMENTATIONS[lime.segmentation]:
            raise ConfigError(source, key,
                              f"not a {lime.segmentation} parameter{_suggest(name, LIME_SEGMENTATIONS[lime.segmentation])}")
        low, high, closed = SEGMENTATION_LIMITS.get(name, (0.0, math.inf, True))
        if not math.isfinite(value) or value < low or value > high or (not closed and value == low):
            interval = f"{'[' if closed else '('}{low}, {high}]" if math.isfinite(high) else (
                f"{'≥' if closed else '>'} {low}")
            raise ConfigError(source, key, f"must be {interval}, got {value!r}")
    if lime.hide_color != "mean" and (len(lime.hide_color) != 3 or not all(0 <= c <= 255 for c in lime.hide_color)):
        raise ConfigError(source, "sections.lime.hide_color", f"expected \"mean\" or [r, g, b] in 0…255, got {lime.hide_color!r}")
    perturb = cfg.sections.perturb
    if perturb.top_k < 1:
        raise ConfigError(source, "sections.perturb.top_k", f"must be ≥ 1, got {perturb.top_k}")
    from .perturb import EditError, parse_variants  # pure, no torch

    for file_name, declared in perturb.variants.items():
        key = f"sections.perturb.variants.{file_name}"
        if not (cfg.images / file_name).is_file():
            raise ConfigError(source, key, f"no image {file_name!r} in {cfg.images}")
        try:
            parse_variants(declared, "declaration", base)
        except EditError as exc:
            raise ConfigError(source, key, str(exc).removeprefix("declaration: ")) from None
    probe = cfg.sections.probe
    for key in ("epochs", "batch_size", "feature_batch_size"):
        if getattr(probe, key) != "auto" and getattr(probe, key) < 1:
            raise ConfigError(source, f"sections.probe.{key}", f"must be ≥ 1, got {getattr(probe, key)}")
    if not probe.lr > 0:
        raise ConfigError(source, "sections.probe.lr", f"must be > 0, got {probe.lr}")
    if not probe.weight_decay >= 0:
        raise ConfigError(source, "sections.probe.weight_decay", f"must be ≥ 0, got {probe.weight_decay}")
    for name, where in probe.datasets.items():
        key = f"sections.probe.datasets.{name}"
        if where.startswith(("sklearn:", "skimage:")):
            continue
        if ":" in where and not Path(where).exists():
            raise ConfigError(source, key,
                              f"unknown built-in {where!r}; use sklearn:digits or skimage:lfw_subset, or a folder")
        try:
            confined(probe.data_root, where, "dataset")
        except PathError as exc:
            raise ConfigError(source, key, f"{exc} (set sections.probe.data_root to the folder that holds it)") from None
    faith = cfg.sections.faithfulness
    for key, low in (("grid", 2), ("step", 1), ("batch_size", 1), ("randomise_blocks", 0), ("lime_samples", 2)):
        if getattr(faith, key) != "auto" and getattr(faith, key) < low:
            raise ConfigError(source, f"sections.faithfulness.{key}", f"must be ≥ {low}, got {getattr(faith, key)}")
    if not faith.random_seeds:
        raise ConfigError(source, "sections.faithfulness.random_seeds", "name at least one seed")
    if not faith.blur_sigma > 0:
        raise ConfigError(source, "sections.faithfulness.blur_sigma", f"must be > 0, got {faith.blur_sigma}")
    if not 0.0 < faith.flag_correlation <= 1.0:
        raise ConfigError(source, "sections.faithfulness.flag_correlation",
                          f"must be in (0, 1], got {faith.flag_correlation}")
    _check_folders(cfg, source)
    query = cfg.sections.heads.query
    if isinstance(query, int) and query < 0:
        raise ConfigError(source, "sections.heads.query", "a patch index must be ≥ 0")


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


def _check_weights(model: ModelConfig, key: str, source: Path | None, base: Path) -> None:
    kind, arg = model.weights_kind, model.weights_arg
    if kind == "hub":
        if arg:
            raise ConfigError(source, key, "'hub' takes no argument; the architecture names the weights")
    elif kind == "file":
        path = _resolve(base, Path(arg)) if arg else None
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
        hint = _suggest(kind, ["hub", "file", "random"])
        raise ConfigError(source, key, f"unknown weights source {kind!r}{hint}; use 'hub', 'file:PATH' or 'random:SEED'")


#: Allowed ranges of lime's segmentation parameters: (low, high, low included).
SEGMENTATION_LIMITS: dict[str, tuple[float, float, bool]] = {
    "kernel_size": (0.0, math.inf, False), "max_dist": (0.0, math.inf, False), "ratio": (0.0, 1.0, True),
    "n_segments": (1.0, math.inf, True), "compactness": (0.0, math.inf, False), "sigma": (0.0, math.inf, True),
    "scale": (0.0, math.inf, False), "min_size": (0.0, math.inf, True),
}


def _suggest(word: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "absent"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false", Path: "a path"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(tp: Any, value: Any, key: str, source: Path | None) -> Any:
    """Check ``value`` against type ``tp`` (and convert TOML forms); raise ConfigError if it does not fit."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a table, got {type(value).__name__}")
        return _build(tp, value, key, source)
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) is type(next(a for a in typing.get_args(tp) if a == value)):
            return value
        hint = _suggest(str(value), [str(a) for a in typing.get_args(tp)]) if isinstance(value, str) else ""
        raise ConfigError(source, key, f"expected {_describe(tp)}, got {value!r}{hint}")
    if origin in (Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            try:
                return _coerce(arm, value, key, source)
            except ConfigError as exc:
                errors.append(exc)
        # Prefer a Literal arm's message, it carries a "did you mean".
        literal_errors = [e for e, a in zip(errors, typing.get_args(tp)) if typing.get_origin(a) is Literal]
        if isinstance(value, str) and literal_errors:
            raise literal_errors[0]
        raise ConfigError(source, key, f"expected {_describe(tp)}, got {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a table, got {type(value).__name__}")
        _key_tp, value_tp = typing.get_args(tp)
        return {str(k): _coerce(value_tp, v, f"{key}.{k}", source) for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(source, key, f"expected {_describe(tp)}, got {type(value).__name__}")
        (item_tp, *_) = typing.get_args(tp)
        return tuple(_coerce(item_tp, v, f"{key}[{i}]", source) for i, v in enumerate(value))
    if tp is Any:
        return value  # validated by the section that owns it (see _check_semantics)
    if tp is type(None):
        raise ConfigError(source, key, "expected no value")
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(source, key, f"expected a path string, got {value!r}")
        return Path(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, key, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(source, key, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if type(value) is not tp:
            raise ConfigError(source, key, f"expected {_describe(tp)}, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in this module, not in the config


def _build(cls: type, data: dict[str, Any], prefix: str, source: Path | None, skip: set[str] = frozenset()) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for key in data:
        if key not in fields:
            dotted = f"{prefix}.{key}" if prefix else key
            raise ConfigError(source, dotted, f"unknown key{_suggest(key, fields)}")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = data[name]
            if name == "models" and cls is GalleryConfig:
                if not isinstance(value, list):
                    raise ConfigError(source, dotted, "expected an array of tables ([[models]])")
                kwargs[name] = tuple(_coerce(ModelConfig, v, f"models[{i}]", source) for i, v in enumerate(value))
            else:
                kwargs[name] = _coerce(hints[name], value, dotted, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(source, dotted, "missing required key")
    return cls(**kwargs)
