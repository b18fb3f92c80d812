"""Planning: the jobs of a build (model × image × section, or model × unit), each with its cache key.

Jobs and keys are plain, serialisable data; the compute thunks close over the loaded model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .._version import __version__
from ..store.cache import Record, cache_key
from ..config.settings import GalleryConfig
from ..data.images import ImageItem, slugify, slugify_name, unique_slugs
from ..data.inputs import ModelInput, prepare_input
from ..models.loaded import LoadedModel
from .outcomes import Skip
from ..sections import Section


@dataclass(frozen=True)
class Job:
    """One unit of work, independent and serialisable (ready for a distributed executor)."""

    section: str
    model: str
    image: str
    key: str



def model_slugs(config: GalleryConfig) -> dict[str, str]:
    """Model name → slug of the whole name (``ViT-B/16`` → ``vit-b-16``), unique among the models."""
    return unique_slugs([m.name for m in config.models], slug=slugify_name)



def job_key(section: Section, model: LoadedModel, image: ImageItem) -> str:
    return cache_key(
        generator=__version__,
        section=section.name,
        params=section.params(),
        model={"name": model.name, "arch": model.config.arch, "weights_sha256": model.weights_sha256,
               "labels": list(model.class_names), "data_config": model.data_config},
        image=image.sha256,
        image_params=section.image_params(image),
    )



@dataclass
class PlannedJob:
    """One planned job: its section, the serialisable :class:`Job`, what it runs on, and the local thunk.

    Attributes:
        target: the image (per-image sections) or the unit name (e.g. a dataset); with the job it
            is all a remote worker needs besides the model (see :func:`compute_job`).
        compute: computes the record in this process (closes over the loaded model).
    """

    section: Section
    job: Job
    target: ImageItem | str | None
    compute: Callable[[], Record]

    def __iter__(self):  # (section, job, compute), as plan_model's callers unpack it
        return iter((self.section, self.job, self.compute))


def plan_model(model: LoadedModel, sections: list[Section], images: list[ImageItem]) -> list[PlannedJob]:
    """The model's work in page order: (section, job, compute thunk) per image × section, then per unit.

    Jobs and their keys are plain data that an executor ships to other processes with their
    target (:func:`compute_job` recomputes there); the thunks close over the loaded model and
    run in this process. The model's preprocessed input of the latest image is reused by that
    image's other sections (jobs come image by image), and only that one is kept.
    """
    active = [s for s in sections if s.applies_to(model)]
    for image in images:
        note_upscaling(model, image)
    last: dict[str, ModelInput] = {}

    def prepared(image: ImageItem) -> ModelInput:
        if image.slug not in last:
            last.clear()
            last[image.slug] = prepare_input(model, image)
        return last[image.slug]

    work = []
    for image in images:
        for s in (s for s in active if s.per_image):
            try:  # a broken declaration next to one image (its variants file, say) fails that job alone
                if not s.applies_to_image(image):
                    continue
                key = job_key(s, model, image)
                compute = lambda s=s, image=image: s.compute(model, image, prepared(image))  # noqa: E731
            except Exception as exc:
                key, compute = "", _raiser(exc)
            work.append(PlannedJob(s, Job(s.name, model.name, image.slug, key), image, compute))
    for section in (s for s in active if not s.per_image):
        for unit in section.units():
            try:
                key = unit_key(section, model, unit)
                compute = lambda section=section, unit=unit: section.compute_unit(model, unit)  # noqa: E731
            except Exception as exc:  # e.g. a missing dataset: the job fails alone, with this error
                key, compute = "", _raiser(exc)
            work.append(PlannedJob(section, Job(section.name, model.name, slugify(unit) or "unit", key), unit, compute))
    return work


def not_applicable(model: LoadedModel, sections: list[Section]) -> list[Skip]:
    """The sections ``model`` is skipped for, each with what it needs that the model lacks."""
    skips = []
    for section in sections:
        lacks = section.missing(model)
        if lacks:
            skips.append(Skip(section=section.name, model=model.name, unit="", reason=lacking(model, lacks)))
    return skips


def lacking(model: LoadedModel, lacks: list[str]) -> str:
    """One line saying what ``model`` lacks, e.g. "needs classifier-head (a classifier head on pooled
    tokens), which this vit model lacks"."""
    from ..families import CAPABILITIES

    needs = ", ".join(f"{need} ({CAPABILITIES[need]})" if need in CAPABILITIES else need for need in lacks)
    return f"needs {needs}, which this {model.family} model lacks"


def compute_job(section: Section, model: LoadedModel, target: ImageItem | str) -> Record:
    """Compute one job from its section, model and target: what a thunk of :func:`plan_model` runs.

    Used where the thunk cannot go (another process or machine): per-image sections get the
    model's own preprocessing of the image, unit sections the unit's name.
    """
    if section.per_image:
        return section.compute(model, target, prepare_input(model, target))
    return section.compute_unit(model, target)


def _raiser(exc: Exception) -> Callable[[], Record]:
    def compute() -> Record:
        raise exc

    return compute


def unit_key(section: Section, model: LoadedModel, unit: str) -> str:
    return cache_key(generator=__version__, section=section.name, params=section.params(),
                     model={"arch": model.config.arch, "weights_sha256": model.weights_sha256,
                            "data_config": model.data_config},
                     unit=unit, unit_params=section.unit_params(unit))



def note_upscaling(model: LoadedModel, image: ImageItem) -> None:
    """Note on the image when it is smaller than the model's input (the transform upscales it)."""
    h, w = image.shape
    ih, iw = model.input_size
    note = f"{w}×{h} pixels: upscaled to {iw}×{ih} by {model.name}'s transform"
    if (h < ih or w < iw) and note not in image.notes:
        image.notes.append(note)

