"""The build as a library call: ``build(config) -> BuildResult``.

The CLI parses options, calls :func:`build` (or :func:`export_figures`), prints and exits; tests
and notebooks call the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config.settings import GalleryConfig
from .pipeline.results import RunResult

__all__ = ["BuildResult", "build", "export_figures"]


@dataclass
class BuildResult:
    """What a build did.

    Attributes:
        run: the computed results, figures and failures.
        pages: the Markdown pages written.
        site_dir: the built site, or None when the site was not built (``site=False`` or mkdocs failed).
        site_error: mkdocs' message when the site could not be built.
    """

    run: RunResult
    pages: list[Path] = field(default_factory=list)
    site_dir: Path | None = None
    site_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.run.ok and self.site_error is None

    @property
    def exit_code(self) -> int:
        """0 when everything succeeded, 1 when anything failed (the rest is kept)."""
        return 0 if self.ok else 1


def build(config: GalleryConfig, *, use_cache: bool = True, fail_fast: bool | None = None, jobs: int = 1,
          site: bool = True, progress: bool = False, command: str = "",
          log: Callable[[str], None] = lambda message: None, executor: str = "local", scheduler: str | None = None,
          workers: int | None = None, chunk_size: int = 8, torch_threads: int | None = None) -> BuildResult:
    """Run every model over every image and enabled section, write the pages, build the site.

    ``executor`` is "local" (compute in this process) or "dask": join the cluster at
    ``scheduler``, or start a LocalCluster of ``workers`` processes; tasks hold ``chunk_size``
    images (:mod:`generator.pipeline.executors`). The outputs are the same whichever runs them.

    Raises:
        OutputWriteError: the output cannot be written (read-only, no space); its ``result`` holds
            what was done.
        FailFast: with ``fail_fast``, at the first failure.
    """
    from .store.atomic import write_fault
    from .pipeline.executors import ExecutorSpec
    from .site.manifest import write_manifest
    from .pipeline.report import run_report_dict
    from .pipeline.runner import OutputWriteError, run, save_run_report
    from .site.pages import SiteBuildError, build_site, write_mkdocs_config, write_pages

    spec = ExecutorSpec(kind=executor, scheduler=scheduler, workers=workers, chunk_size=chunk_size,
                        torch_threads=torch_threads)
    result = run(config, use_cache=use_cache, fail_fast=fail_fast, progress=progress, command=command, jobs=jobs,
                 log=log, executor=spec, write_report=False)
    try:
        pages = write_pages(result)  # pages that cannot be made are failures of the run
        mkdocs_config = write_mkdocs_config(result)
    except OSError as exc:
        if write_fault(exc) is None:
            raise
        raise OutputWriteError(f"cannot write the pages in {config.output}: {exc.strerror}", result) from None
    finally:
        save_run_report(result)  # once, with every failure in it (pages that could not be made included)
    outcome = BuildResult(run=result, pages=pages)
    if site:
        try:
            build_site(mkdocs_config, config.site_dir)
            outcome.site_dir = config.site_dir
        except SiteBuildError as exc:
            outcome.site_error = str(exc)
    try:  # last: the hashes of everything published (vit-gallery verify checks them)
        write_manifest(config.output, run_report_dict(result), outcome.site_dir, config.run.device)
    except OSError as exc:
        if write_fault(exc) is None:
            raise
        raise OutputWriteError(f"cannot write the manifest in {config.output}: {exc.strerror}", result) from None
    return outcome


def export_figures(config: GalleryConfig, out_dir: Path, *, dpi: int = 300, jobs: int = 1, progress: bool = False,
                   log: Callable[[str], None] = lambda message: None) -> RunResult:
    """Write only the figures (PNG at ``dpi``, and PDF), tables and data files into ``out_dir``.

    Cached results are reused; no pages, site or run report are written. The PDFs are written
    whatever ``run.pdf`` says: this export is where a site without them sends its readers.
    """
    from .pipeline.runner import run

    config = config.model_copy(update={"run": config.run.model_copy(update={"dpi": dpi, "pdf": True})})
    return run(config, docs_dir=Path(out_dir).resolve(), write_report=False, jobs=jobs, progress=progress, log=log)
