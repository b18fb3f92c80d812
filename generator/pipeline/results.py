"""Typed results of a build: failures, figures, job results, model summaries, the run result.

Pages (:mod:`generator.site.pages`) and the run report read these types, never the orchestrator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .outcomes import Skip

if TYPE_CHECKING:
    from ..config.settings import GalleryConfig
    from ..data.images import ImageItem
    from ..models.loaded import LoadedModel


@dataclass
class Failure:
    """One thing that went wrong: which stage, which item, and a trimmed traceback."""

    stage: str  # "image" | "model" | "section" | "render" (a figure) | "page" (a page that could not be made)
    error: str
    image: str | None = None
    model: str | None = None
    section: str | None = None
    traceback: str = ""
    #: The Dask worker's address when the job ran on one (None: in this process).
    worker: str | None = None


@dataclass
class FigureRef:
    """A written figure: paths relative to the docs folder (``pdf``: None when ``run.pdf`` is off), and its caption."""

    png: str
    pdf: str | None
    caption: str


@dataclass
class JobResult:
    section: str
    model: str
    image: str
    key: str
    meta: dict[str, Any]
    figures: dict[str, FigureRef]
    cached: bool
    #: Written tables: table id → {"csv": path, "json": path} relative to the docs folder.
    tables: dict[str, dict[str, str]] = field(default_factory=dict)
    #: The few record arrays a section keeps for cross-model page extras.
    arrays: dict[str, Any] = field(default_factory=dict)
    #: What the section's extra outputs (Section.write_outputs) left for the pages.
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSummary:
    name: str
    slug: str
    display_name: str
    arch: str
    family: str
    source: str
    weights: str
    weights_sha256: str
    random_weights: bool
    num_classes: int
    data_config: dict[str, Any]
    structure: str = ""
    #: timm ``name.tag`` whose pretrained config set preprocessing and labels.
    timm_name: str = ""


@dataclass
class RunResult:
    config: GalleryConfig
    images: list[ImageItem]
    models: list[ModelSummary]
    results: list[JobResult]
    failures: list[Failure]
    section_seconds: dict[str, float]
    cache_stats: dict[str, int]
    started: str
    wall_seconds: float
    command: str
    docs_dir: Path
    environment: dict[str, str] = field(default_factory=dict)
    #: Jobs whose input is absent (a dataset not downloaded): not failures unless --strict.
    skipped: list[Skip] = field(default_factory=list)
    #: Sections a model is skipped for because its family lacks what they need (a class token,
    #: windows, …): expected, so neither a failure nor a skip of --strict.
    not_applicable: list[Skip] = field(default_factory=list)
    #: How compute ran (:meth:`generator.pipeline.executors.ExecutorSpec.describe`).
    executor: dict[str, Any] = field(default_factory=dict)
    #: Of ``section_seconds``, the time spent drawing figures (in the drawing processes with ``--jobs N``).
    drawing_seconds: float = 0.0
    #: Dataset mode: the whole set (``images`` above is the sample that gets pages), labels and
    #: accuracy per model (:func:`generator.pipeline.runner.dataset_summary`); None otherwise.
    dataset: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


    @property
    def exit_code(self) -> int:
        """0 when everything succeeded, 1 when anything failed."""
        return 0 if self.ok else 1


def summarise_model(model: LoadedModel, slug: str) -> ModelSummary:
    """The model as pages and the run report show it."""
    return ModelSummary(
        name=model.name,
        slug=slug,
        display_name=model.display_name,
        arch=model.config.arch,
        family=model.family,
        source=model.source,
        weights=model.config.weights,
        weights_sha256=model.weights_sha256,
        random_weights=model.random_weights,
        num_classes=len(model.class_names),
        structure=model.structure,
        timm_name=model.timm_name or model.config.arch,
        data_config={k: (list(v) if isinstance(v, tuple) else v) for k, v in model.data_config.items()},
    )

