"""The one interface every gallery section implements.

A section turns (model, image) into a :class:`~generator.store.cache.Record` (pure compute, cached
by key), draws figures from that record (rendering never recomputes), and names the Jinja2
partial that shows it on an image's page. Adding a section means one compute module, one
render module, one template, and one entry in :data:`generator.sections.SECTIONS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar


from ..store.cache import Record
from ..data.inputs import ModelInput
from ..data.images import ImageItem
from ..models.loaded import LoadedModel
from ..config.settings import SectionSettings

if TYPE_CHECKING:  # section modules import torch, compute and render code inside their methods,
    from matplotlib.figure import Figure

    from ..config.settings import GalleryConfig


class Section(ABC):
    """Base class: subclasses set the class attributes and implement compute and render."""

    #: Identifier used in config keys, cache keys and figure paths.
    name: ClassVar[str]
    #: Heading on the image page.
    title: ClassVar[str]
    #: What the section needs from a model (:data:`generator.families.CAPABILITIES`); a model that
    #: lacks one is skipped, with that reason in the run report.
    needs: ClassVar[frozenset[str]] = frozenset({"classifier-head"})
    #: Of these, the model needs at least one (e.g. global attention rows or windows).
    needs_any: ClassVar[frozenset[str]] = frozenset()
    #: Jinja2 partial (under templates/) that shows this section's results on an image page.
    template: ClassVar[str]
    #: The site chapter that gathers this section over all images: (slug, title, intro template).
    chapter: ClassVar[tuple[str, str, str]]
    #: Bump when the computation changes, so cached results are recomputed.
    version: ClassVar[int] = 1
    #: False for sections that run per model × unit (e.g. dataset) instead of per model × image.
    per_image: ClassVar[bool] = True
    #: Record arrays kept with the job result for cross-model page extras (e.g. LIME's IoU table).
    summary_arrays: ClassVar[tuple[str, ...]] = ()
    #: This section's settings: its ``[sections.<name>]`` table, declared next to the section.
    Settings: ClassVar[type[SectionSettings]] = SectionSettings

    def __init__(self, config: GalleryConfig):
        self.config = config
        self.use_cache = True
        #: Relevance maps by content (a :class:`generator.relevance.registry.RelevanceStore`), set by the runner;
        #: sections that compare maps read them through it.
        self.store: Any = None
        #: The finished build (a :class:`generator.pipeline.results.RunResult`), set by the page writer, for
        #: page extras that read another section's results (e.g. the maps read the sanity check).
        self.build: Any = None

    def relevance_store(self) -> Any:
        """The build's relevance-map store, or a private in-memory one when none was given."""
        if self.store is None:
            from ..relevance.registry import RelevanceStore

            self.store = RelevanceStore(None)
        return self.store

    @property
    def settings(self) -> Any:
        """This section's typed config table."""
        return getattr(self.config.sections, self.name)

    @classmethod
    def check_config(cls, config: GalleryConfig, source: Path | None) -> None:
        """Checks of this section's settings that need the rest of the config (files, folders).

        Raises:
            ConfigError: naming the dotted key.
        """

    def enabled(self) -> bool:
        return bool(self.settings.enabled)

    def missing(self, model: LoadedModel) -> list[str]:
        """What this section needs that ``model`` lacks, in words (empty: the section applies)."""
        lacks = model.missing(self.needs)
        if self.needs_any and not self.needs_any & model.capabilities:
            lacks.append(" or ".join(sorted(self.needs_any)))
        return lacks

    def applies_to(self, model: LoadedModel) -> bool:
        return not self.missing(model)

    def units(self) -> list[str]:
        """The units a non-per-image section runs over (e.g. dataset names)."""
        return []

    def unit_params(self, unit: str) -> dict[str, Any]:
        """What identifies a unit's inputs (e.g. a dataset's content hash); part of the cache key."""
        return {}

    def compute_unit(self, model: LoadedModel, unit: str) -> Record:
        """Compute for one model × unit (non-per-image sections)."""
        raise NotImplementedError

    def applies_to_image(self, image: ImageItem) -> bool:
        """Whether this section has anything to do for ``image`` (default: always)."""
        return True

    def image_params(self, image: ImageItem) -> dict[str, Any]:
        """Per-image inputs beyond the image bytes that change the result; part of the cache key."""
        return {}

    def tables(self, record: Record) -> dict[str, Any]:
        """Tables (pandas DataFrames) to write as CSV + JSON next to the figures: table id → frame."""
        return {}

    def params(self) -> dict[str, Any]:
        """Everything that changes this section's result; part of the cache key."""
        values = self.settings.model_dump()
        values.pop("enabled", None)
        return {"section_version": self.version, **values}

    def compute(self, model: LoadedModel, image: ImageItem, inputs: ModelInput) -> Record:
        """Pure computation for one model × image (no plotting, no file I/O)."""
        raise NotImplementedError

    @abstractmethod
    def render(self, record: Record) -> dict[str, Figure]:
        """Draw the record's figures: figure id ("" for the main one) → matplotlib Figure."""

    def write_outputs(self, docs_dir: Path, model_slug: str, record: Record) -> dict[str, Any]:
        """Files beyond data, tables and figures (e.g. the explorer's), under the job's own slugs.

        Returns what pages need to link them (kept on the job result as ``outputs``). Listing the
        files written as ``"files"`` (docs-relative path → size in bytes) lets an unchanged rebuild
        skip the writing (:func:`generator.pipeline.outputs.write_outputs`).
        """
        return {}

    def page_extras(self, results: list) -> dict[str, Any]:
        """Extra page context computed from all models' results for one image (default: none)."""
        return {}

    def chapter_extras(self, results: list) -> dict[str, Any]:
        """Extra context for the section's chapter, from every image's results (default: none)."""
        return {}

    def caption(self, record: Record, figure_id: str = "") -> str:
        """Plain-text caption for a figure (escaped when pages are written)."""
        return self.title
