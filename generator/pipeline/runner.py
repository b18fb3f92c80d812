"""Running a build: consult the cache, compute what is missing, write outputs, collect failures.

Data flow is one way: config → models × images → jobs (each with a cache key) → records →
figures → pages. A failing image, model or section becomes a :class:`Failure` record; the
run goes on (unless ``fail_fast``) and the failures land in the run report and exit code.

The run has three steps. (1) Every model is opened (its identity, from the memo when it is
current) and planned; each job's key is looked up in the cache, and the misses go to the
executor (:mod:`generator.pipeline.executors`: in this process, or a Dask cluster, where they start at
once). (2) Model by model, in plan order, this process takes each record (from the cache or
the executor) and writes its data file and tables. (3) Figures are drawn from the records
(``jobs`` processes). Since every output is written here, in plan order, from the same
records, the outputs do not depend on the executor. In dataset mode (``[dataset]``), step 3
waits until every model has run: the images that get pages and figures are a sample that
always includes the misclassified ones.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ..store.atomic import write_fault
from ..store.cache import Record, ResultCache, canonical_json
from .executors import ExecutorSpec, Outcome, WorkItem, make_executor
from ..config.settings import GalleryConfig
from .outputs import RenderError, RenderExecutor, write_data, write_outputs, write_tables
from ..data.images import ImageItem, ImageLoadError, display_name, scan_dataset, scan_images
from ..models.loaded import open_model
from .outcomes import JobSkipped, Skip
from .plan import model_slugs, not_applicable, plan_model
from ..relevance.registry import RelevanceStore
from .report import environment_versions, trimmed_traceback, write_run_report
from .results import Failure, JobResult, ModelSummary, RunResult, summarise_model
from ..store.safepaths import claim_folder
from ..sections import SECTIONS


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
    executor: ExecutorSpec | None = None,
) -> RunResult:
    """Run every enabled section for every model × image (or unit); write data, figures and the run report.

    Compute runs where ``executor`` says (default: in this process, one model at a time); each
    model's figures are then drawn by ``jobs`` worker processes (``jobs=1``: in this process).
    Outputs depend on neither. Pages and the site are written by :mod:`generator.site.pages` from the
    returned result.

    Args:
        docs_dir: where data files, tables and figures go (default ``<output>/docs``).
        write_report: write ``<output>/run_report.json`` (off for a figures-only export, and for
            :func:`generator.build`, which writes it once the pages' failures are in).
        executor: where compute runs (:class:`generator.pipeline.executors.ExecutorSpec`; default local).
    """
    state = _Run(config, use_cache=use_cache, fail_fast=config.run.fail_fast if fail_fast is None else fail_fast,
                 command=command, docs_dir=docs_dir or config.output / "docs", log=log,
                 spec=executor or ExecutorSpec())
    state.claim_output()
    state.scan_images()
    state.make_sections()
    with RenderExecutor(jobs, config, state.cache, state.docs_dir) as renderer, \
            make_executor(state.spec, config, state.cache, state.log) as pool:
        state.compute_and_write(renderer, pool, progress)
        state.executor_info = pool.describe()
        if state.dataset_mode:
            state.draw_sample(renderer)
    result = state.result()
    if write_report:
        save_run_report(result)
    return result


def save_run_report(result: RunResult) -> None:
    """Write ``<output>/run_report.json``; a read-only folder or a full disk is an :class:`OutputWriteError`."""
    out = result.config.output
    try:
        write_run_report(result, out / "run_report.json")
    except OSError as exc:
        if write_fault(exc) is None:
            raise
        raise OutputWriteError(f"cannot write the run report in {out}: {exc.strerror}", result) from None


class _Run:
    """One run's state, and its steps in order: claim the output, scan the images, make the sections,
    compute and write (model by model), draw the dataset sample, and the result."""

    def __init__(self, config: GalleryConfig, *, use_cache: bool, fail_fast: bool, command: str, docs_dir: Path,
                 log: Callable[[str], None], spec: ExecutorSpec):
        self.config, self.use_cache, self.fail_fast, self.command = config, use_cache, fail_fast, command
        self.docs_dir, self.log, self.spec = docs_dir, log, spec
        self.started = datetime.now(timezone.utc)
        self.t0 = time.perf_counter()
        self.out = config.output
        self.cache = ResultCache(self.out / "cache", enabled=use_cache)
        self.failures: list[Failure] = []
        self.results: list[JobResult] = []
        self.section_seconds: dict[str, float] = {}
        self.drawing = 0.0  # of which drawing figures (the rest: compute, data files, tables)
        self.summaries: list[ModelSummary] = []
        self.skipped: list[Skip] = []
        self.inapplicable: list[Skip] = []
        self.dataset_mode = config.dataset.enabled
        self.dataset: dict | None = None
        self.executor_info = spec.describe()
        self.images: list[ImageItem] = []
        self.all_images: list[ImageItem] = []
        self.sections: list = []
        self.stash: list[tuple] = []  # dataset mode: what to draw once the sample is known

    # ------------------------------------------------------------------ bookkeeping

    def record_failure(self, failure: Failure) -> None:
        self.failures.append(failure)
        where = " / ".join(x for x in (failure.section, failure.model, failure.image) if x)
        self.log(f"FAILED [{failure.stage}] {where}: {failure.error}"
                 + (f" (worker {failure.worker})" if failure.worker else ""))
        if self.fail_fast:
            raise FailFast(failure)

    def add_seconds(self, name: str, seconds: float, drawn: bool = False) -> None:
        self.section_seconds[name] = self.section_seconds.get(name, 0.0) + seconds
        if drawn:
            self.drawing += seconds

    def result(self) -> RunResult:
        """What the run has done so far (the whole run at its end)."""
        cache = self.cache
        return RunResult(
            config=self.config,
            images=self.images,
            models=self.summaries,
            results=self.results,
            failures=self.failures,
            section_seconds={k: round(v, 3) for k, v in self.section_seconds.items()},
            drawing_seconds=round(self.drawing, 3),
            cache_stats={"hits": cache.hits, "misses": cache.misses, "discarded": cache.discarded,
                         "size_bytes": cache.size_bytes()},
            started=self.started.isoformat(timespec="seconds"),
            wall_seconds=round(time.perf_counter() - self.t0, 3),
            command=self.command or " ".join(sys.argv),
            docs_dir=self.docs_dir,
            environment=environment_versions(),
            skipped=self.skipped,
            not_applicable=self.inapplicable,
            executor=self.executor_info,
            dataset=self.dataset,
        )

    def write_failed(self, exc: BaseException, what: str) -> OutputWriteError:
        return OutputWriteError(f"cannot write {what}: {write_fault(exc).strerror}", self.result())

    # ------------------------------------------------------------------ steps

    def claim_output(self) -> None:
        try:
            claim_folder(self.out, "output")
            if self.docs_dir != self.out / "docs":
                claim_folder(self.docs_dir, "figures")
        except OSError as exc:
            if write_fault(exc) is None:
                raise
            raise OutputWriteError(f"cannot write into {self.out}: {exc.strerror or exc}") from None

    def scan_images(self) -> None:
        config = self.config
        try:
            images, bad_images = scan_dataset(config.images) if self.dataset_mode else scan_images(config.images)
        except ImageLoadError as exc:
            images, bad_images = [], []
            self.record_failure(Failure(stage="image", error=str(exc)))
        self.images = self.all_images = images
        for bad in bad_images:
            name = f"{bad.path.parent.name}/{bad.path.name}" if self.dataset_mode else bad.path.name
            self.record_failure(Failure(stage="image", image=display_name(name), error=bad.reason))
        if not images:
            self.log(f"no usable images in {config.images}")

    def make_sections(self) -> None:
        self.sections = [s for s in (cls(self.config) for cls in SECTIONS) if s.enabled()]
        store = RelevanceStore(self.cache if self.use_cache else None)
        for section in self.sections:
            section.use_cache = self.use_cache  # sections with stores of their own (probe features) honour --no-cache
            section.store = store

    def prepare(self, model_config, pool, bar, slugs: dict[str, str]):
        """Open and plan one model, look its keys up, and hand the misses to the executor."""
        cache = self.cache
        try:
            model = open_model(model_config, self.config.run.device, self.out / "cache" / "models",
                               read_memo=self.use_cache)
        except Exception as exc:
            if write_fault(exc) is not None:
                raise self.write_failed(exc, f"the output in {self.out}") from None
            self.record_failure(Failure(stage="model", model=model_config.name, error=str(exc),
                                        traceback=trimmed_traceback(exc)))
            return None
        self.summaries.append(summarise_model(model, slugs[model.name]))
        self.inapplicable.extend(not_applicable(model, self.sections))
        work = plan_model(model, self.sections, self.images)
        hits = {i for i, p in enumerate(work) if p.job.key and cache.has(p.job.key)}
        misses = [WorkItem(i, p.section, p.job, p.target, p.compute) for i, p in enumerate(work)
                  if p.job.key and i not in hits]
        for item in misses:
            cache.get(item.job.key)  # counts the miss, as a lookup always has
        bar.total += len(work)
        bar.update(len(work) - len(misses))
        batch = pool.submit(model, misses, bar.update)
        if self.spec.kind != "local":
            model._module = None  # workers load their own; this process only writes
        return model, slugs[model.name], work, batch, hits

    def compute_and_write(self, renderer, pool, progress: bool) -> None:
        """Model by model: records → data files and tables, in plan order; then the model's figures."""
        slugs = model_slugs(self.config)
        bar = tqdm(total=0, desc="compute", unit="job", disable=not progress, leave=False, smoothing=0.1)
        models = self.config.models
        # A cluster gets every model's work at once; in this process, models run one at a time.
        ready = [self.prepare(m, pool, bar, slugs) for m in models] if self.spec.kind != "local" else None
        for k, model_config in enumerate(models):
            prepared = ready[k] if ready is not None else self.prepare(model_config, pool, bar, slugs)
            if ready is not None:
                ready[k] = None
            if prepared is None:
                continue
            model, model_slug, work, batch, hits = prepared
            del prepared
            pending = [done for i, p in enumerate(work) if (done := self.write_job(i, p, model, model_slug, batch,
                                                                                  i in hits)) is not None]
            batch.release()
            del model, work, batch
            gc.collect()
            if self.dataset_mode:  # records are read again from the cache for the sample's figures
                self.stash.append((model_slug, [(s, j, r if not self.use_cache else _summary(s, r), c, t, o)
                                                for s, j, r, c, t, o in pending]))
                continue
            self.render(renderer, pending, model_slug)
        bar.close()

    def write_job(self, i: int, p, model, model_slug: str, batch, hit: bool):
        """One job's record (cached or computed) → its data file, tables and outputs; None when it failed."""
        section, job, cache, out = p.section, p.job, self.cache, self.out
        started_job = time.perf_counter()
        try:
            outcome = _take(i, p, cache, batch, hit)
            # section time: the compute (here, or on a worker), and the writing; not the waiting
            started_job = time.perf_counter() - outcome.seconds
            if outcome.exception is not None:
                raise outcome.exception
            if outcome.record is None:  # a remote job failed: its error travelled as text
                if outcome.write_fault:
                    raise OutputWriteError(f"cannot write the cache in {cache.root}: {outcome.error}"
                                           f" (worker {outcome.worker})", self.result())
                self.record_failure(Failure(stage="section", section=section.name, model=model.name,
                                            image=job.image, error=outcome.error, traceback=outcome.traceback,
                                            worker=outcome.worker))
                return None
            record = outcome.record if outcome.cached else as_stored(outcome.record)
            # The cache shares work between identical inputs; outputs belong to this job's names.
            record.model, record.image = job.model, job.image
            write_data(self.docs_dir, section.name, model_slug, job, record)
            tables = write_tables(self.docs_dir, section, model_slug, record)
            # dataset mode: only the sample gets page material (draw_sample)
            outputs = {} if self.dataset_mode else write_outputs(section, record, job, cache, self.docs_dir,
                                                                  model_slug)
            return section, job, record, outcome.cached, tables, outputs
        except (FailFast, OutputWriteError):
            batch.release()
            raise
        except JobSkipped as exc:
            self.skipped.append(Skip(section=section.name, model=model.name, unit=job.image, reason=str(exc)))
        except Exception as exc:
            if write_fault(exc) is not None:
                batch.release()
                raise self.write_failed(exc, f"the output in {out}") from None
            self.record_failure(Failure(stage="section", section=section.name, model=model.name, image=job.image,
                                        error=f"{type(exc).__name__}: {exc}", traceback=trimmed_traceback(exc)))
        finally:
            self.add_seconds(section.name, time.perf_counter() - started_job)
        return None

    def draw_sample(self, renderer) -> None:
        """Dataset mode: the sample gets figures and pages; every image keeps its data and results."""
        self.dataset = dataset_summary(self.config, self.all_images, self.stash, self.summaries)
        sampled = {image.slug for image in self.images if image.slug in self.dataset["sampled"]}
        self.images = [image for image in self.all_images if image.slug in sampled]
        reader = ResultCache(self.cache.root, enabled=self.use_cache)
        for model_slug, pending in self.stash:
            drawn, kept = [], []
            for section, job, record, cached, tables, outputs in pending:
                full = None
                if job.image in sampled:
                    full = record if not self.use_cache else reader.get(job.key)
                if full is None:
                    kept.append((section, job, record, cached, tables, outputs))
                    continue
                full.model, full.image = job.model, job.image
                try:
                    outputs = write_outputs(section, full, job, reader, self.docs_dir, model_slug)
                except Exception as exc:
                    if write_fault(exc) is not None:
                        raise self.write_failed(exc, f"the output in {self.out}") from None
                    self.record_failure(Failure(stage="render", section=section.name, model=job.model,
                                                image=job.image, error=f"{type(exc).__name__}: {exc}",
                                                traceback=trimmed_traceback(exc)))
                    continue
                drawn.append((section, job, full, cached, tables, outputs))
            self.render(renderer, drawn, model_slug)
            for section, job, record, cached, tables, outputs in kept:
                self.results.append(_job_result(section, job, record, cached, tables, {}, outputs))
        order = {image.slug: i for i, image in enumerate(self.all_images)}
        model_order = {m.name: i for i, m in enumerate(self.summaries)}
        self.results.sort(key=lambda r: (model_order.get(r.model, 0), order.get(r.image, len(order))))

    def render(self, renderer, pending, model_slug: str) -> None:
        """Draw the figures of ``pending`` jobs (``jobs`` processes); each becomes a result or a failure."""
        tasks = [(section.name, record, job, model_slug) for section, job, record, *_ in pending]
        for (section, job, record, cached, tables, outputs), (outcome, seconds) in zip(pending,
                                                                                    renderer.render(tasks)):
            self.add_seconds(section.name, seconds, drawn=True)
            if isinstance(outcome, RenderError):
                if outcome.write_fault:
                    raise OutputWriteError(f"cannot write figures in {self.docs_dir}: {outcome.error}",
                                           self.result())
                self.record_failure(Failure(stage="render", section=section.name, model=job.model,
                                            image=job.image, error=outcome.error, traceback=outcome.traceback))
                continue
            self.results.append(_job_result(section, job, record, cached, tables, outcome, outputs))


def _take(index: int, planned, cache: ResultCache, batch, hit: bool) -> Outcome:
    """The job's record: from the cache (a hit), or from the executor (a miss), or its planning error."""
    job = planned.job
    if not job.key:  # planning failed: the thunk raises the error
        try:
            planned.compute()
        except Exception as exc:
            return Outcome(None, exception=exc)
        return Outcome(None, exception=RuntimeError("planning failed"))
    if hit:
        start = time.perf_counter()
        record = cache.get(job.key)
        if record is not None:
            return Outcome(record, time.perf_counter() - start, cached=True)
        start = time.perf_counter()  # discarded as corrupt: compute it here
        try:
            record = planned.compute()
            cache.put(job.key, record)
            return Outcome(record, time.perf_counter() - start)
        except Exception as exc:
            return Outcome(None, exception=exc)
    return batch.result(index)


def as_stored(record: Record) -> Record:
    """``record`` as the cache gives it back: metadata through canonical JSON (sorted keys, JSON types).

    Outputs are then written from the same values whether the record was computed here, on a
    worker, or read from the cache; without it a table's columns would follow the order in which
    a section happened to build its rows only when freshly computed.
    """
    return Record(record.section, record.model, record.image, record.arrays, json.loads(canonical_json(record.meta)))


def _summary(section, record: Record) -> Record:
    """The record without the arrays pages do not need (dataset mode keeps thousands of them)."""
    arrays = {k: record.arrays[k] for k in section.summary_arrays if k in record.arrays}
    return Record(record.section, record.model, record.image, arrays, record.meta)


def _job_result(section, job, record: Record, cached: bool, tables, figures, outputs) -> JobResult:
    return JobResult(section=section.name, model=job.model, image=job.image, key=job.key, meta=record.meta,
                     figures=figures, cached=cached, tables=tables, outputs=outputs,
                     arrays={k: record.arrays[k] for k in section.summary_arrays if k in record.arrays})


# --------------------------------------------------------------------------- dataset mode


def prediction_of(meta: dict) -> dict | None:
    """The top-1 prediction a record states (``meta["top"][0]``: index and label), if any."""
    top = meta.get("top") if isinstance(meta, dict) else None
    return top[0] if top else None


def label_matches(known: str, predicted: dict) -> bool:
    """Whether a prediction (``{"index", "label"}``) names the known class (:func:`generator.render.text.label_matches`)."""
    from ..render.text import label_matches as names_class

    return names_class(known, str(predicted["label"]), int(predicted["index"]))


def sample_rank(seed: int, slug: str) -> str:
    """The seeded order of the sample: a hash of the seed and the image's slug (stable across runs and executors)."""
    return hashlib.sha256(f"{seed}\0{slug}".encode("utf-8", "surrogateescape")).hexdigest()


def choose_sample(images: list[ImageItem], size: int, seed: int) -> list[str]:
    """Slugs of the images that get pages and figures, in dataset order.

    Every image some model misclassifies is in, whatever ``size``; the others follow by
    :func:`sample_rank` until ``size`` images are chosen.
    """
    wrong = {i.slug for i in images if any(not v["correct"] for v in i.verdicts.values())}
    rest = sorted((i.slug for i in images if i.slug not in wrong), key=lambda s: sample_rank(seed, s))
    chosen = wrong | set(rest[:max(0, size - len(wrong))])
    return [i.slug for i in images if i.slug in chosen]


def dataset_summary(config: GalleryConfig, images: list[ImageItem], stash: list, models: list[ModelSummary]) -> dict:
    """Verdicts per image and model (set on each image), accuracy per model, and the sample.

    A model's prediction for an image is the top-1 class its first record for that image
    states (sections that classify put it in ``meta["top"]``).
    """
    by_slug = {m.slug: m.name for m in models}
    predictions: dict[tuple[str, str], dict] = {}
    for model_slug, pending in stash:
        for _, job, record, *_ in pending:
            top = prediction_of(record.meta)
            if top is not None:
                predictions.setdefault((by_slug.get(model_slug, job.model), job.image), top)
    accuracy = {}
    for m in models:
        correct = total = 0
        for image in images:
            top = predictions.get((m.name, image.slug))
            if top is None or image.known_label is None:
                continue
            right = label_matches(image.known_label, top)
            image.verdicts[m.name] = {"predicted": str(top["label"]), "correct": right}
            correct += right
            total += 1
        accuracy[m.name] = {"correct": correct, "total": total, "accuracy": round(correct / total, 6) if total else None}
    sampled = choose_sample(images, config.dataset.sample, config.dataset.seed)
    return {
        "root": str(config.images),
        "images": len(images),
        "classes": sorted({i.known_label for i in images if i.known_label is not None}),
        "sample_size": config.dataset.sample,
        "seed": config.dataset.seed,
        "sampled": sampled,
        "misclassified": sum(any(not v["correct"] for v in i.verdicts.values()) for i in images),
        "accuracy": accuracy,
        "items": [{"slug": i.slug, "file": i.name, "known_label": i.known_label, "verdicts": i.verdicts}
                  for i in images],
    }
