"""The run report: what ran, what failed, cache statistics, the environment; and the closing summary."""

from __future__ import annotations

import json
import platform
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from .._version import __version__
from ..store.atomic import atomic_write_text
from ..models.loaded import environment_threads
from .outcomes import skip_lines
from ..render.text import plural
from .results import RunResult


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
        "not_applicable": [asdict(s) for s in result.not_applicable],
        "failures_per_worker": failures_per_worker(result),
        "executor": result.executor,
        "dataset": result.dataset,
        "environment": result.environment,
    }


def failures_per_worker(result: RunResult) -> dict[str, int]:
    """Failure counts by the Dask worker that ran the job ("local" for this process)."""
    counts: dict[str, int] = {}
    for f in result.failures:
        where = f.worker or "local"
        counts[where] = counts.get(where, 0) + 1
    return counts


def write_run_report(result: RunResult, path: Path) -> None:
    atomic_write_text(path, json.dumps(run_report_dict(result), indent=2, sort_keys=True, default=str) + "\n")


def summary_lines(result: RunResult) -> Iterable[str]:
    """Human summary for the end of a run."""
    per_section: dict[str, int] = {}
    for r in result.results:
        per_section[r.section] = per_section.get(r.section, 0) + 1
    figures = sum(len(r.figures) for r in result.results)
    formats = "PNG + PDF" if result.config.run.pdf else "PNG"
    yield (f"{plural(len(result.images), 'image')} × {plural(len(result.models), 'model')}: "
           f"{plural(len(result.results), 'result')} "
           f"({sum(r.cached for r in result.results)} from cache), {figures} figures ({formats}), "
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
            yield f"  [{f.stage}] {where}: {f.error}" + (f" (worker {f.worker})" if f.worker else "")
    else:
        yield "no failures"

