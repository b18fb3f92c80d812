"""The batch: plan jobs, consult the cache, compute, render, collect failures, write the report.

Data flow is one way: config → models × images → jobs (each with a cache key) → records →
figures → pages. A failing image, model or section becomes a :class:`Failure` record; the
run goes on (unless ``fail_fast``) and the failures land in the run report and exit code.
"""

from __future__ import annotations

import errno
import gc
import json
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from tqdm.auto import tqdm

from . import __version__
from .atomic import atomic_write_text, write_if_changed
from .cache import Record, ResultCache, cache_key, canonical_json
from .config import GalleryConfig
from .images import ImageItem, display_name, scan_images, slugify, slugify_name, unique_slugs
from .loaded_model import LoadedModel, environment_threads, open_model
from .outcomes import JobSkipped, Skip, plural, skip_lines
from .safepaths import claim_folder, ensure_inside
from .sections import SECTIONS, ModelInput, Section

#: errno values that mean "the output cannot be written at all": the run stops with one message.
WRITE_FAULTS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


@dataclass
class Failure:
    """One thing that went wrong: which stage, which item, and a trimmed traceback."""

    stage: str  # "image" | "model" | "section"
    error: str
    image: str | None = None
    model: str | None = None
    section: str | None = None
    traceback: str = ""


@dataclass
class FigureRef:
    """A written figure: paths relative to the docs folder, and its caption."""

    png: str
    pdf: str
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

    @property
    def ok(self) -> bool:
        return not self.failures


class OutputWriteError(RuntimeError):
    """The output cannot be written (read-only folder, no space left): the run stops cleanly.

    Attributes:
        result: what the run had done until then (its summary is printed by the CLI).
    """

    def __init__(self, message: str, result: "RunResult | None" = None):
        super().__init__(message)
        self.result = result


def write_fault(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` when it says the output cannot be written, else None."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in WRITE_FAULTS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class FailFast(RuntimeError):
    """Raised to stop the run at the first failure when ``fail_fast`` is set."""

    def __init__(self, failure: Failure):
        self.failure = failure
        super().__init__(failure.error)


@dataclass(frozen=True)
class Job:
    """One unit of work, independent and serialisable (ready for a distributed executor)."""

    section: str
    model: str
    image: str
    key: str


def trimmed_traceback(exc: BaseException, limit: int = 6) -> str:
    """The last ``limit`` frames of ``exc``'s traceback, as text."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-limit)).strip()


def environment_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform(), "generator": __version__}
    for package in ("torch", "torchvision", "timm", "lime", "numpy", "pillow", "matplotlib", "pandas",
                    "jinja2", "click", "mkdocs", "mkdocs-material", "mkdocs-glightbox", "safetensors",
                    "scikit-image", "scikit-learn"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    out["torch_threads"] = environment_threads()
    return out


def model_slugs(config: GalleryConfig) -> dict[str, str]:
    """Model name → slug of the whole name (``ViT-B/16`` → ``vit-b-16``), unique among the models."""
    return unique_slugs([m.name for m in config.models], slug=slugify_name)


def figure_stem(docs_dir: Path, section: str, figure_id: str, model_slug: str, image_slug: str) -> Path:
    """``figures/<section>[-<id>]/<model>/<image>`` under the docs folder (slugs only: no escapes)."""
    folder = section if not figure_id else f"{section}-{figure_id}"
    stem = docs_dir / "figures" / folder / model_slug / image_slug
    ensure_inside(docs_dir, stem)
    return stem


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


def run(
    config: GalleryConfig,
    *,
    use_cache: bool = True,
    fail_fast: bool | None = None,
    progress: bool = True,
    command: str = "",
    jobs: int = 1,
    docs_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Run every enabled section for every model × image (or unit); write data, figures and the run report.

    Compute runs in this process, one model at a time; each model's figures are then drawn by
    ``jobs`` worker processes (``jobs=1``: in this process). Outputs do not depend on ``jobs``.
    Pages and the site are written by :mod:`generator.site` from the returned result.
    """
    fail_fast = config.run.fail_fast if fail_fast is None else fail_fast
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    out = config.output
    docs_dir = docs_dir or out / "docs"
    cache = ResultCache(out / "cache", enabled=use_cache)
    failures: list[Failure] = []
    results: list[JobResult] = []
    section_seconds: dict[str, float] = {}
    summaries: list[ModelSummary] = []
    skipped: list[Skip] = []

    def record_failure(failure: Failure) -> None:
        failures.append(failure)
        where = " / ".join(x for x in (failure.section, failure.model, failure.image) if x)
        log(f"FAILED [{failure.stage}] {where}: {failure.error}")
        if fail_fast:
            raise FailFast(failure)

    def add_seconds(name: str, seconds: float) -> None:
        section_seconds[name] = section_seconds.get(name, 0.0) + seconds

    images: list[ImageItem] = []

    def partial_result() -> RunResult:
        return RunResult(
            config=config,
            images=images,
            models=summaries,
            results=results,
            failures=failures,
            section_seconds={k: round(v, 3) for k, v in section_seconds.items()},
            cache_stats={"hits": cache.hits, "misses": cache.misses, "discarded": cache.discarded,
                         "size_bytes": cache.size_bytes()},
            started=started.isoformat(timespec="seconds"),
            wall_seconds=round(time.perf_counter() - t0, 3),
            command=command or " ".join(sys.argv),
            docs_dir=docs_dir,
            environment=environment_versions(),
            skipped=skipped,
        )

    try:
        claim_folder(out, "output")
        if docs_dir != out / "docs":
            claim_folder(docs_dir, "figures")
    except OSError as exc:
        if write_fault(exc) is None:
            raise
        raise OutputWriteError(f"cannot write into {out}: {exc.strerror or exc}") from None
    images, bad_images = scan_images(config.images)
    for bad in bad_images:
        record_failure(Failure(stage="image", image=display_name(bad.path.name), error=bad.reason))
    if not images:
        log(f"no usable images in {config.images}")

    sections = [s for s in (cls(config) for cls in SECTIONS) if s.enabled()]
    for section in sections:
        section.use_cache = use_cache  # sections with stores of their own (probe features) honour --no-cache
    device = config.run.device  # resolved when a model is first loaded
    memo = out / "cache" / "models"
    slugs = model_slugs(config)

    with RenderExecutor(jobs, config, cache, docs_dir) as renderer:
        for model_config in config.models:
            try:
                model = open_model(model_config, device, memo, read_memo=use_cache)
            except Exception as exc:
                if write_fault(exc) is not None:
                    raise OutputWriteError(f"cannot write the output in {out}: {write_fault(exc).strerror}",
                                           partial_result()) from None
                record_failure(Failure(stage="model", model=model_config.name, error=str(exc),
                                       traceback=trimmed_traceback(exc)))
                continue
            model_slug = slugs[model.name]
            summaries.append(_summarise(model, model_slug))
            pending = []
            work = plan_model(model, sections, images)
            for section, job, compute in tqdm(work, desc=model.name, unit="job", disable=not progress, leave=False):
                started_job = time.perf_counter()
                try:
                    record = cache.get(job.key) if job.key else None
                    cached = record is not None
                    if record is None:
                        record = compute()
                        cache.put(job.key, record)
                    # The cache shares work between identical inputs; outputs belong to this job's names.
                    record.model, record.image = job.model, job.image
                    write_data(docs_dir, section.name, model_slug, job, record)
                    tables = write_tables(docs_dir, section, model_slug, record)
                    pending.append((section, job, record, cached, tables))
                except FailFast:
                    raise
                except JobSkipped as exc:
                    skipped.append(Skip(section=section.name, model=model.name, unit=job.image, reason=str(exc)))
                except Exception as exc:
                    if write_fault(exc) is not None:
                        raise OutputWriteError(f"cannot write the output in {out}: {write_fault(exc).strerror}",
                                               partial_result()) from None
                    record_failure(Failure(stage="section", section=section.name, model=model.name, image=job.image,
                                           error=f"{type(exc).__name__}: {exc}", traceback=trimmed_traceback(exc)))
                finally:
                    add_seconds(section.name, time.perf_counter() - started_job)
            del model, work
            gc.collect()
            tasks = [(section.name, record, job, model_slug) for section, job, record, _, _ in pending]
            for (section, job, record, cached, tables), (outcome, seconds) in zip(pending, renderer.render(tasks)):
                add_seconds(section.name, seconds)
                if isinstance(outcome, RenderError):
                    if outcome.write_fault:
                        raise OutputWriteError(f"cannot write figures in {docs_dir}: {outcome.error}", partial_result())
                    record_failure(Failure(stage="render", section=section.name, model=job.model, image=job.image,
                                           error=outcome.error, traceback=outcome.traceback))
                    continue
                results.append(JobResult(section=section.name, model=job.model, image=job.image, key=job.key,
                                         meta=record.meta, figures=outcome, cached=cached, tables=tables,
                                         arrays={k: record.arrays[k] for k in section.summary_arrays
                                                 if k in record.arrays}))

    result = partial_result()
    if docs_dir == out / "docs":
        try:
            write_run_report(result, out / "run_report.json")
        except OSError as exc:
            if write_fault(exc) is None:
                raise
            raise OutputWriteError(f"cannot write the run report in {out}: {exc.strerror}", result) from None
    return result


def plan_model(model: LoadedModel, sections: list[Section], images: list[ImageItem]) -> list:
    """The model's work in page order: (section, job, compute thunk) per image × section, then per unit.

    Jobs and their keys are plain data (a distributed executor could ship them); the thunks
    close over the loaded model, which stays in this process.
    """
    active = [s for s in sections if s.applies_to(model)]
    inputs: dict[str, ModelInput] = {}
    for image in images:
        note_upscaling(model, image)

    def prepared(image: ImageItem) -> ModelInput:
        if image.slug not in inputs:
            inputs[image.slug] = prepare_input(model, image)
        return inputs[image.slug]

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
            work.append((s, Job(s.name, model.name, image.slug, key), compute))
    for section in (s for s in active if not s.per_image):
        for unit in section.units():
            try:
                key = unit_key(section, model, unit)
                compute = lambda section=section, unit=unit: section.compute_unit(model, unit)  # noqa: E731
            except Exception as exc:  # e.g. a missing dataset: the job fails alone, with this error
                key, compute = "", _raiser(exc)
            work.append((section, Job(section.name, model.name, slugify(unit) or "unit", key), compute))
    return work


def _raiser(exc: Exception) -> Callable[[], Record]:
    def compute() -> Record:
        raise exc

    return compute


def unit_key(section: Section, model: LoadedModel, unit: str) -> str:
    return cache_key(generator=__version__, section=section.name, params=section.params(),
                     model={"arch": model.config.arch, "weights_sha256": model.weights_sha256,
                            "data_config": model.data_config},
                     unit=unit, unit_params=section.unit_params(unit))


class RenderExecutor:
    """Draws figures in this process (``jobs=1``) or in a pool of ``jobs`` spawned workers."""

    def __init__(self, jobs: int, config: GalleryConfig, cache: ResultCache, docs_dir: Path):
        self.jobs, self.config, self.cache, self.docs_dir = max(1, jobs), config, cache, docs_dir
        self.pool = None

    def __enter__(self) -> "RenderExecutor":
        if self.jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def render(self, tasks: list) -> list[tuple[Any, float]]:
        """One (figure refs or the exception, seconds) per task, in task order."""
        args = [(self.config, name, record, job, str(self.cache.root), self.cache.enabled, model_slug, self.docs_dir)
                for name, record, job, model_slug in tasks]
        if self.pool is None:
            return [_render_task(*a) for a in args]
        return [future.result() for future in [self.pool.submit(_render_task, *a) for a in args]]


def _render_task(config: GalleryConfig, section_name: str, record: Record, job: Job, cache_root: str,
                 cache_enabled: bool, model_slug: str, docs_dir: Path) -> tuple[Any, float]:
    """Worker entry point: draw one record's figures; exceptions are returned, not raised."""
    start = time.perf_counter()
    try:
        section = next(cls for cls in SECTIONS if cls.name == section_name)(config)
        cache = ResultCache(Path(cache_root), enabled=cache_enabled)
        refs = _render(section, record, job, cache, docs_dir, model_slug, config.run.dpi)
        return refs, time.perf_counter() - start
    except Exception as exc:  # returned as text: tracebacks do not cross process boundaries
        fault = write_fault(exc)
        error = fault.strerror if fault is not None else f"{type(exc).__name__}: {exc}"
        return RenderError(error, trimmed_traceback(exc), fault is not None), time.perf_counter() - start


@dataclass
class RenderError:
    """A figure that could not be drawn (from a worker or this process)."""

    error: str
    traceback: str
    #: True when the output could not be written (no space, read-only): the run stops.
    write_fault: bool = False


def prepare_input(model: LoadedModel, image: ImageItem) -> ModelInput:
    """The model's own preprocessing (timm's eval transform from the resolved data config)."""
    from .models import preprocess

    view, x = preprocess(model, image.rgb)
    return ModelInput(view=view, x=x)


def note_upscaling(model: LoadedModel, image: ImageItem) -> None:
    """Note on the image when it is smaller than the model's input (the transform upscales it)."""
    h, w = image.shape
    ih, iw = model.input_size
    note = f"{w}×{h} pixels: upscaled to {iw}×{ih} by {model.name}'s transform"
    if (h < ih or w < iw) and note not in image.notes:
        image.notes.append(note)


def write_data(docs_dir: Path, section: str, model_slug: str, job: Job, record: Record) -> Path:
    """The record's metadata as stable JSON: ``data/<section>/<model>/<image>.json`` (byte-identical reruns)."""
    path = docs_dir / "data" / section / model_slug / f"{record.image}.json"
    ensure_inside(docs_dir, path)
    payload = {"section": section, "model": record.model, "image": record.image, "cache_key": job.key,
               "result": record.meta}
    write_if_changed(path, (json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


def write_tables(docs_dir: Path, section: Section, model_slug: str, record: Record) -> dict[str, dict[str, str]]:
    """Write the section's tables as CSV and JSON beside its figures; return their relative paths."""
    written = {}
    for table_id, frame in section.tables(record).items():
        stem = figure_stem(docs_dir, section.name, table_id, model_slug, record.image)
        csv_bytes = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
        json_bytes = (frame.to_json(orient="records", indent=2, force_ascii=False) + "\n").encode("utf-8")
        write_if_changed(stem.with_suffix(".csv"), csv_bytes)
        write_if_changed(stem.with_suffix(".json"), json_bytes)
        rel = stem.relative_to(docs_dir).as_posix()
        written[table_id] = {"csv": f"{rel}.csv", "json": f"{rel}.json"}
    return written


def _render(section: Section, record: Record, job: Job, cache: ResultCache, docs_dir: Path,
            model_slug: str, dpi: int) -> dict[str, FigureRef]:
    """Draw and write the record's figures unless a stamp says they exist for this key, dpi and place.

    The stamp is per output place (model and image slug): two images with identical bytes share
    the cached result but each gets its own figures.
    """
    stamp_name = f"figures-{dpi}-{model_slug}-{record.image}"
    stamped = cache.has_stamp(job.key, stamp_name)
    refs: dict[str, FigureRef] = {}
    if stamped:
        try:
            listed = json.loads(cache.read_stamp(job.key, stamp_name))
            refs = {fid: FigureRef(**ref) for fid, ref in listed.items()}
        except (ValueError, TypeError, OSError):  # an unreadable stamp: draw again
            refs = {}
        if refs and all((docs_dir / r.png).is_file() and (docs_dir / r.pdf).is_file() for r in refs.values()):
            return refs
    from .render.style import save_figure  # matplotlib: only when something is drawn

    refs = {}
    for figure_id, fig in section.render(record).items():
        stem = figure_stem(docs_dir, section.name, figure_id, model_slug, record.image)
        save_figure(fig, stem, dpi)
        fig.clear()
        rel = stem.relative_to(docs_dir).as_posix()
        refs[figure_id] = FigureRef(png=f"{rel}.png", pdf=f"{rel}.pdf", caption=section.caption(record, figure_id))
    cache.stamp(job.key, stamp_name, canonical_json({k: asdict(v) for k, v in refs.items()}))
    return refs


def _summarise(model: LoadedModel, slug: str) -> ModelSummary:
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


def run_report_dict(result: RunResult) -> dict[str, Any]:
    """The JSON run report: what ran, what failed, cache statistics and the environment."""
    return {
        "generator": __version__,
        "started": result.started,
        "wall_seconds": result.wall_seconds,
        "command": result.command,
        "config": str(result.config.source) if result.config.source else None,
        "models": [asdict(m) for m in result.models],
        "images": [{"slug": i.slug, "file": i.name, "sha256": i.sha256, "notes": i.notes} for i in result.images],
        "jobs": {"total": len(result.results), "cached": sum(r.cached for r in result.results)},
        "section_seconds": result.section_seconds,
        "cache": result.cache_stats,
        "failures": [asdict(f) for f in result.failures],
        "skipped": [asdict(s) for s in result.skipped],
        "environment": result.environment,
    }


def write_run_report(result: RunResult, path: Path) -> None:
    atomic_write_text(path, json.dumps(run_report_dict(result), indent=2, sort_keys=True, default=str) + "\n")


def summary_lines(result: RunResult) -> Iterable[str]:
    """Human summary for the end of a run."""
    per_section: dict[str, int] = {}
    for r in result.results:
        per_section[r.section] = per_section.get(r.section, 0) + 1
    figures = sum(len(r.figures) for r in result.results)
    yield (f"{plural(len(result.images), 'image')} × {plural(len(result.models), 'model')}: "
           f"{plural(len(result.results), 'result')} "
           f"({sum(r.cached for r in result.results)} from cache), {figures} figures (PNG + PDF), "
           f"{result.wall_seconds:.1f}s")
    for name, count in per_section.items():
        yield f"  {name:<12} {count:>4} results  {result.section_seconds.get(name, 0):7.1f}s"
    size_mb = result.cache_stats.get("size_bytes", 0) / 1e6
    yield from skip_lines(result.skipped)
    yield f"cache: {result.cache_stats.get('hits', 0)} hits, {result.cache_stats.get('misses', 0)} misses, {size_mb:.1f} MB"
    if result.failures:
        yield f"{len(result.failures)} FAILURE(S):"
        for f in result.failures:
            where = " / ".join(x for x in (f.section, f.model, f.image) if x)
            yield f"  [{f.stage}] {where}: {f.error}"
    else:
        yield "no failures"
