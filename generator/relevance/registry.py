"""Relevance maps: one small interface for every method that says where a model looks.

A method (attention rollout, gradient rollout, Swin rollout, LIME, Grad-CAM, …) is a subclass of
:class:`RelevanceMethod` registered with :func:`register_method`. It declares which model
needs it has of a model (a class token, windows, …: :mod:`generator.families`), its own settings (the ``[methods.<name>]`` table of the config) and
``map(model, inputs, target) -> (h, w)`` relevance for one image and one class. Comparisons
(the faithfulness chapter, the maps grid on image pages) iterate over the registry and read
maps through :class:`RelevanceStore`, which caches each map by content; they never compute
another section's work themselves nor read its settings.

Adding a method is one module with a subclass and ``@register_method`` on it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import numpy as np

from .._version import __version__
from ..store.cache import Record, ResultCache, cache_key
from ..config.schema import Table, register_table, unregister_table
from ..config.settings import SectionSettings, method_field

if TYPE_CHECKING:
    from ..data.images import ImageItem
    from ..data.inputs import ModelInput
    from ..models.loaded import LoadedModel
    from ..config.settings import GalleryConfig

__all__ = ["MethodSettings", "RelevanceMap", "RelevanceMethod", "RelevanceStore", "MapSpec", "map_specs",
           "register_method", "registered_methods", "unregister_method"]


class MethodSettings(SectionSettings):
    """Settings every relevance method has: ``enabled``. Methods subclass it to add parameters."""


@dataclass(frozen=True)
class RelevanceMap:
    """One relevance map.

    Attributes:
        values: (h, w) float64; larger means more relevant for the target class. ``h, w`` is the
            method's natural resolution (the patch grid, superpixels painted on pixels, …).
        meta: anything the method wants to say about this map (JSON-serialisable).
    """

    values: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


class RelevanceMethod(ABC):
    """Base class of relevance methods. Subclasses set the class attributes and implement :meth:`map`."""

    #: Identifier: the ``[methods.<name>]`` table, cache keys and data files.
    name: ClassVar[str]
    #: How pages and tables name the map.
    label: ClassVar[str]
    #: What the method needs from a model (:data:`generator.families.CAPABILITIES`).
    needs: ClassVar[frozenset[str]] = frozenset({"classifier-head"})
    #: The method's settings class (``enabled`` plus its parameters, with their limits).
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    #: Bump when the computation changes, so cached maps are recomputed.
    version: ClassVar[int] = 1
    #: One sentence for the pages: what the map shows and where it comes from.
    description: ClassVar[str] = ""
    #: The function this method wraps, as ``"module:function"``: ``fn(model, x, targets, **params)`` on a
    #: (B, 3, H, W) batch → (B, h, w) maps (:mod:`generator.relevance`); "" for a method computed here.
    wraps: ClassVar[str] = ""

    @classmethod
    def wrapped(cls) -> Callable[..., np.ndarray]:
        """The function named by :attr:`wraps` (its module imported on first use)."""
        if not cls.wraps:
            raise TypeError(f"{cls.__name__} wraps no function")
        module, _, name = cls.wraps.partition(":")
        return getattr(importlib.import_module(module), name)

    def __init__(self, config: GalleryConfig, variant: str = ""):
        self.config = config
        self.variant = variant

    @classmethod
    def variants(cls, config: GalleryConfig) -> list[str]:
        """The maps this method makes under ``config`` (e.g. one per head fusion); ``[""]`` for one."""
        return [""]

    @property
    def settings(self) -> Any:
        """The method's ``[methods.<name>]`` table."""
        return getattr(self.config.methods, method_field(self.name))

    @property
    def id(self) -> str:
        """Unique among the configured maps: ``name`` or ``name:variant``."""
        return f"{self.name}:{self.variant}" if self.variant else self.name

    @property
    def title(self) -> str:
        """The map's label on pages: ``label`` or ``label (variant)``."""
        return f"{self.label} ({self.variant})" if self.variant else self.label

    def enabled(self) -> bool:
        return bool(self.settings.enabled)

    def applies_to(self, model: LoadedModel) -> bool:
        return not model.missing(self.needs)

    def params(self) -> dict[str, Any]:
        """Everything that changes this map besides the model, image and target; part of its cache key."""
        values = self.settings.model_dump()
        values.pop("enabled", None)
        return {"method_version": self.version, "variant": self.variant, **values}

    def passes(self, module: Any, batch: int, x: Any) -> list[tuple[int, int, str]] | None:
        """The forward/backward passes one map needs, for ``make bench``: (count, batch, kind) groups with
        kinds from :data:`generator.devtools.bench.PASS_KINDS`; None (the default): not benched.

        Args:
            module: the model's module; batch: the model's "auto" batch size; x: (1, 3, H, W) input.
        """
        return None

    @abstractmethod
    def map(self, model: LoadedModel, inputs: ModelInput, target: int) -> RelevanceMap:
        """Relevance of ``inputs`` for class ``target`` under ``model``: (h, w) plus metadata."""


_REGISTRY: dict[str, type[RelevanceMethod]] = {}


def register_method(cls: type[RelevanceMethod]) -> type[RelevanceMethod]:
    """Class decorator: add a method to the registry (its name must be new)."""
    if not getattr(cls, "name", None) or not getattr(cls, "label", None):
        raise TypeError(f"{cls.__name__} needs class attributes 'name' and 'label'")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a relevance method named {cls.name!r} is already registered ({_REGISTRY[cls.name].__name__})")
    register_table("methods", Table(cls.name, cls.Settings))
    _REGISTRY[cls.name] = cls
    return cls


def unregister_method(name: str) -> None:
    """Remove a method from the registry (for tests and plugins that come and go)."""
    _REGISTRY.pop(name, None)
    unregister_table("methods", name)


def registered_methods() -> list[type[RelevanceMethod]]:
    """Every registered method class, in registration order.

    The built-in methods register when :mod:`generator.sections` is imported (loading a config does).
    """
    return list(_REGISTRY.values())


@dataclass(frozen=True)
class MapSpec:
    """One configured map: the method instance (with its variant)."""

    method: RelevanceMethod

    @property
    def id(self) -> str:
        return self.method.id

    @property
    def title(self) -> str:
        return self.method.title


def map_specs(config: GalleryConfig, model: LoadedModel | None = None) -> list[MapSpec]:
    """Every enabled map of the config (for ``model``'s family when given), in registry order."""
    specs = []
    for cls in registered_methods():
        for variant in cls.variants(config):
            method = cls(config, variant)
            if method.enabled() and (model is None or method.applies_to(model)):
                specs.append(MapSpec(method))
    return specs


def model_identity(model: LoadedModel) -> dict[str, Any]:
    """What a map depends on in the model (name excluded: maps are shared between names)."""
    return {"arch": model.config.arch, "weights_sha256": model.weights_sha256, "data_config": model.data_config,
            "labels": list(model.class_names)}


class RelevanceStore:
    """Maps by content: computed once per (method, parameters, model, image, target, variant of the model).

    Args:
        cache: the build's result cache; None keeps maps in memory for this store's life only.
    """

    def __init__(self, cache: ResultCache | None):
        self.cache = cache
        self._memory: dict[str, Record] = {}

    def key(self, spec: MapSpec, model: LoadedModel, image: ImageItem, target: int, randomised: str = "") -> str:
        return cache_key(kind="relevance-map", generator=__version__, method=spec.method.name,
                         params=spec.method.params(), model=model_identity(model), image=image.sha256,
                         target=int(target), randomised=randomised)

    def get(self, spec: MapSpec, model: LoadedModel, image: ImageItem, inputs: ModelInput, target: int,
            randomised: str = "") -> RelevanceMap:
        """The map of ``spec`` for ``target``, from the cache or computed and stored.

        Args:
            randomised: non-empty when ``model`` is a randomised copy (names the randomisation,
                so the map is cached apart from the trained model's).
        """
        key = self.key(spec, model, image, target, randomised)
        record = self.cache.get(key) if self.cache is not None else self._memory.get(key)
        if record is None:
            result = spec.method.map(model, inputs, target)
            values = np.asarray(result.values, dtype=np.float64)
            if values.ndim != 2 or not np.isfinite(values).all():
                raise ValueError(f"{spec.title}: a relevance map must be a finite (h, w) array, got shape "
                                 f"{values.shape}{'' if np.isfinite(values).all() else ' with non-finite values'}")
            record = Record(section="relevance", model=model.name, image=image.slug, arrays={"map": values},
                            meta={"method": spec.id, "target": int(target), **result.meta})
            if self.cache is not None:
                self.cache.put(key, record)
            else:
                self._memory[key] = record
        meta = {k: v for k, v in record.meta.items() if k not in ("method", "target")}
        return RelevanceMap(record.arrays["map"].astype(np.float64), meta)

    def all(self, specs: list[MapSpec], model: LoadedModel, image: ImageItem, inputs: ModelInput, target: int,
            randomised: str = "") -> Iterator[tuple[MapSpec, RelevanceMap]]:
        for spec in specs:
            yield spec, self.get(spec, model, image, inputs, target, randomised)


def with_module(model: LoadedModel, module: Any) -> LoadedModel:
    """``model`` with another module (e.g. a randomised copy), sharing its identity and device."""
    return replace(model, _module=module)
