"""Running a build: consult the cache, compute what is missing, write outputs, collect failures.

Data flow is one way: config → models × images → jobs (each with a cache key) → records →
figures → pages. A failing image, model or section becomes a :class:`Failure` record; the
run goes on (unless ``fail_fast``) and the failures land in the run report and exit code.
"""

from __future__ import annotations

import gc
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from .atomic import write_fault
from .cache import ResultCache
from .settings import GalleryConfig
from .figures import RenderError, RenderExecutor, write_data, write_tables
from .images import ImageItem, display_name, scan_images
from .loaded_model import open_model
from .outcomes import JobSkipped, Skip
from .plan import model_slugs, plan_model
from .relevance import RelevanceStore
from .report import environment_versions, trimmed_traceback, write_run_report
from .results import Failure, JobResult, ModelSummary, RunResult, summarise_model
from .safepaths import claim_folder
from .sections import SECTIONS


class OutputWriteError(RuntimeError):
    """The output cannot be written (read-only folder, no space left): the run stops cleanly.

    Attributes:
        result: what the run had done until then (its summary is printed by the CLI).
    """

    def __init__(self, message: str, result: "RunResult | None" = None):
        super().__init__(message)
        self.result = result



class FailFast(RuntimeError):
    """Raised to stop the run at the first failure when ``fail_fast`` is set."""

    def __init__(self, failure: Failure):
        self.failure = failure
        super().__init__(failure.error)



def run(
    config: GalleryConfig,
    *,
    use_cache: bool = True,
    fail_fast: bool | None = None,
    progress: bool = True,
    command: str = "",
    jobs: int = 1,
    docs_dir: Path | None = None,
    write_report: bool = True,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Run every enabled section for every model × image (or unit); write data, figures and the run report.

    Compute runs in this process, one model at a time; each model's figures are then drawn by
    ``jobs`` worker processes (``jobs=1``: in this process). Outputs do not depend on ``jobs``.
    Pages and the site are written by :mod:`generator.site` from the returned result.

    Args:
        docs_dir: where data files, tables and figures go (default ``<output>/docs``).
        write_report: write ``<output>/run_report.json`` (off for a figures-only export).
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
    store = RelevanceStore(cache if use_cache else None)
    for section in sections:
        section.use_cache = use_cache  # sections with stores of their own (probe features) honour --no-cache
        section.store = store
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
            summaries.append(summarise_model(model, model_slug))
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
                    outputs = section.write_outputs(docs_dir, model_slug, record)
                    pending.append((section, job, record, cached, tables, outputs))
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
            tasks = [(section.name, record, job, model_slug) for section, job, record, *_ in pending]
            for (section, job, record, cached, tables, outputs), (outcome, seconds) in zip(pending,
                                                                                           renderer.render(tasks)):
                add_seconds(section.name, seconds)
                if isinstance(outcome, RenderError):
                    if outcome.write_fault:
                        raise OutputWriteError(f"cannot write figures in {docs_dir}: {outcome.error}", partial_result())
                    record_failure(Failure(stage="render", section=section.name, model=job.model, image=job.image,
                                           error=outcome.error, traceback=outcome.traceback))
                    continue
                results.append(JobResult(section=section.name, model=job.model, image=job.image, key=job.key,
                                         meta=record.meta, figures=outcome, cached=cached, tables=tables,
                                         outputs=outputs,
                                         arrays={k: record.arrays[k] for k in section.summary_arrays
                                                 if k in record.arrays}))

    result = partial_result()
    if write_report:
        try:
            write_run_report(result, out / "run_report.json")
        except OSError as exc:
            if write_fault(exc) is None:
                raise
            raise OutputWriteError(f"cannot write the run report in {out}: {exc.strerror}", result) from None
    return result

