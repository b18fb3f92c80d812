"""Writing outputs of jobs: data JSON, tables, and figures (drawn here or in worker processes)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..store.atomic import write_fault, write_if_changed
from ..store.cache import Record, ResultCache, canonical_json
from ..config.settings import GalleryConfig
from .plan import Job
from .report import trimmed_traceback
from .results import FigureRef
from ..store.safepaths import ensure_inside
from ..sections import SECTIONS, Section


def figure_stem(docs_dir: Path, section: str, figure_id: str, model_slug: str, image_slug: str) -> Path:
    """``figures/<section>[-<id>]/<model>/<image>`` under the docs folder (slugs only: no escapes)."""
    folder = section if not figure_id else f"{section}-{figure_id}"
    stem = docs_dir / "figures" / folder / model_slug / image_slug
    ensure_inside(docs_dir, stem)
    return stem



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
        refs = _render(section, record, job, cache, docs_dir, model_slug, config.run.dpi, config.run.pdf)
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


def write_outputs(section: Section, record: Record, job: Job, cache: ResultCache, docs_dir: Path,
                  model_slug: str) -> dict[str, Any]:
    """The section's extra outputs (:meth:`Section.write_outputs`), written unless a stamp says they exist.

    A section whose outputs list their files (``outputs["files"]``: docs-relative path → size in
    bytes) gets a stamp per key and output place; a rebuild that finds the stamp and every listed
    file at its size reuses the outputs without reading the record's arrays again.
    """
    stamp_name = f"outputs-{section.name}-{model_slug}-{record.image}"
    if cache.has_stamp(job.key, stamp_name):
        try:
            outputs = json.loads(cache.read_stamp(job.key, stamp_name))
            files = outputs["files"]
            if files and all(_has_size(docs_dir / rel, size) for rel, size in files.items()):
                return outputs
        except (ValueError, TypeError, KeyError, AttributeError, OSError):  # unreadable: write again
            pass
    outputs = section.write_outputs(docs_dir, model_slug, record)
    if outputs.get("files"):
        cache.stamp(job.key, stamp_name, canonical_json(outputs))
    return outputs


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _render(section: Section, record: Record, job: Job, cache: ResultCache, docs_dir: Path,
            model_slug: str, dpi: int, pdf: bool) -> dict[str, FigureRef]:
    """Draw and write the record's figures (PNG, and PDF when ``pdf``) unless a stamp says they
    exist for this key, dpi, format set and place.

    The stamp is per output place (model and image slug): two images with identical bytes share
    the cached result but each gets its own figures. Without ``pdf``, a PDF an earlier build left
    beside a figure is removed, so the site does not publish a stale one.
    """
    from ..render import RENDER_VERSION  # drawing or captions changed: draw again

    stamp_name = f"figures-r{RENDER_VERSION}-{dpi}{'-pdf' if pdf else ''}-{model_slug}-{record.image}"
    stamped = cache.has_stamp(job.key, stamp_name)
    refs: dict[str, FigureRef] = {}
    if stamped:
        try:
            listed = json.loads(cache.read_stamp(job.key, stamp_name))
            refs = {fid: FigureRef(**ref) for fid, ref in listed.items()}
        except (ValueError, TypeError, OSError):  # an unreadable stamp: draw again
            refs = {}
        if refs and all((docs_dir / r.png).is_file() and (r.pdf is None or (docs_dir / r.pdf).is_file())
                        for r in refs.values()):
            return refs
    from ..render.style import save_figure  # matplotlib: only when something is drawn

    refs = {}
    for figure_id, fig in section.render(record).items():
        stem = figure_stem(docs_dir, section.name, figure_id, model_slug, record.image)
        save_figure(fig, stem, dpi, pdf=pdf)
        fig.clear()
        if not pdf:
            stem.with_suffix(".pdf").unlink(missing_ok=True)
        rel = stem.relative_to(docs_dir).as_posix()
        refs[figure_id] = FigureRef(png=f"{rel}.png", pdf=f"{rel}.pdf" if pdf else None,
                                    caption=section.caption(record, figure_id))
    cache.stamp(job.key, stamp_name, canonical_json({k: asdict(v) for k, v in refs.items()}))
    return refs

