"""Pages: the Jinja2 environment, the Markdown page writers, and the mkdocs build.

Every value printed into a page is escaped for Markdown and HTML by default (the
environment's ``finalize``); only values wrapped in :class:`markupsafe.Markup` (paths made
of slugs, Markdown built here) pass through unchanged.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from PIL import Image

from . import resources
from .atomic import write_if_changed
from .report import run_report_dict
from .results import JobResult, RunResult
from .safepaths import claim_folder, ensure_inside, folder_problem
from .sections import SECTIONS


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~-])")


def escape_md(value: Any) -> str:
    """Escape a user string for Markdown text: HTML entities, then Markdown punctuation.

    >>> escape_md("<b>x&y</b>_1")
    '&lt;b&gt;x&amp;y&lt;/b&gt;\\\\_1'
    """
    # Markdown first: the entities html.escape makes (&#x27;) contain '#', which must stay as is.
    return html.escape(_MD_SPECIAL.sub(r"\\\1", str(value)), quote=True)


def escape_attr(value: Any) -> Markup:
    """Escape for an HTML attribute or a raw-HTML context (no Markdown escapes)."""
    return Markup(html.escape(str(value), quote=True))


def _finalize(value: Any) -> Any:
    if isinstance(value, Markup) or value is None:
        return "" if value is None else value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return Markup(escape_md(value))


def make_environment(templates_dir: Path | None = None) -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(templates_dir or resources.templates_dir())),
        autoescape=True,  # macros then return Markup; _finalize adds the Markdown escapes for plain values
        finalize=_finalize,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["attr"] = escape_attr
    env.filters["code"] = lambda v: Markup(f"<code>{html.escape(str(v), quote=True).replace('|', '&#124;')}</code>")
    env.filters["pct"] = lambda p: f"{100.0 * float(p):.1f}%"
    env.filters["path"] = lambda p: Markup(str(p))  # only ever slugs and fixed names
    env.filters["md_table"] = markdown_table
    env.globals["near_chance"] = _near_chance
    return env


def _near_chance(top_prob: float, num_classes: int) -> dict | None:
    """The near-chance caveat of a prediction (:func:`generator.findings.near_chance`), as a dict, or None."""
    from dataclasses import asdict

    from .findings import near_chance

    caveat = near_chance(float(top_prob), int(num_classes))
    return asdict(caveat) if caveat else None


def _thumbnail(rgb: np.ndarray, path: Path, size: int = 256) -> None:
    image = Image.fromarray(rgb)
    scale = size / max(image.size)
    resample = Image.Resampling.NEAREST if scale > 2 else Image.Resampling.LANCZOS
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    write_if_changed(path, buffer.getvalue())


def page_extras(section, results) -> dict:
    """A section's page extras, with every DataFrame turned into an escaped Markdown table."""
    return {k: markdown_table(v) if hasattr(v, "to_markdown") else v
            for k, v in section.page_extras(results).items()}


def markdown_table(frame) -> Markup:
    """A pandas DataFrame as a Markdown table, every cell escaped."""
    escaped = frame.map(lambda v: escape_md(v) if isinstance(v, str) else v)
    escaped.columns = [escape_md(c) for c in frame.columns]
    return Markup(escaped.to_markdown(index=False))


def write_pages(result: RunResult, templates_dir: Path | None = None) -> list[Path]:
    """Write every Markdown page of the gallery into ``result.docs_dir``; return their paths."""
    env = make_environment(templates_dir)
    docs = result.docs_dir
    written: list[Path] = []

    def page(template: str, target: str, **context: Any) -> None:
        text = env.get_template(template).render(**context)
        path = docs / target
        ensure_inside(docs, path)
        write_if_changed(path, text.encode("utf-8"))
        written.append(path)

    by_image: dict[str, dict[str, list[JobResult]]] = defaultdict(lambda: defaultdict(list))
    for r in result.results:
        by_image[r.image][r.section].append(r)
    model_order = {m.name: i for i, m in enumerate(result.models)}
    model_by_name = {m.name: m for m in result.models}
    sections = enabled_sections(result)

    for image in result.images:
        _thumbnail(image.rgb, docs / "inputs" / f"{image.slug}.png")
        blocks = []
        for section in (s for s in sections if s.per_image):
            items = sorted(by_image[image.slug].get(section.name, []), key=lambda r: model_order.get(r.model, 0))
            if items:
                extras = page_extras(section, items)
                blocks.append({"section": section, "results": items, "extras": extras})
        failures = [f for f in result.failures if f.image == image.slug]
        page("image.md.j2", f"images/{image.slug}.md", image=image, blocks=blocks, models=model_by_name,
             failures=failures)

    report = run_report_dict(result)
    chapters = chapter_list(result)
    page("index.md.j2", "index.md", config=result.config, images=result.images, models=result.models,
         report=report, chapters=chapters)
    page("chapters/attention.md.j2", "chapters/attention.md", models=result.models)
    page("chapters/obtaining.md.j2", "chapters/obtaining.md")
    for section in sections:
        slug, title, intro = section.chapter
        entries = []
        if not section.per_image:
            items = sorted((r for r in result.results if r.section == section.name),
                           key=lambda r: model_order.get(r.model, 0))
            extras = page_extras(section, items)
            page("chapters/unit-section.md.j2", f"chapters/{slug}.md", chapter={"title": title, "intro": intro},
                 section=section, results=items, extras=extras, models=model_by_name, config=result.config)
            continue
        for image in result.images:
            items = sorted(by_image[image.slug].get(section.name, []), key=lambda r: model_order.get(r.model, 0))
            if items:
                extras = page_extras(section, items)
                entries.append({"image": image, "section": section, "results": items, "extras": extras})
        all_results = [r for r in result.results if r.section == section.name]
        page("chapters/section.md.j2", f"chapters/{slug}.md", chapter={"title": title, "intro": intro},
             entries=entries, models=model_by_name, chapter_extras=section.chapter_extras(all_results))
    write_claims_page(result, page)
    config_text = result.config.source.read_text(encoding="utf-8") if result.config.source else ""
    page("reproducibility.md.j2", "reproducibility.md", report=report, config=result.config, config_text=config_text)
    page("figure-list.md.j2", "figure-list.md", figures=figure_index(result), dpi=result.config.run.dpi)
    page("run-report.md.j2", "run-report.md", report=report, failures=result.failures)
    _remove_stale_pages(docs, written)
    return written


def enabled_sections(result: RunResult) -> list:
    sections = [s for s in (cls(result.config) for cls in SECTIONS) if s.enabled()]
    for s in sections:  # extras that read another section's results (maps: the sanity check)
        s.build = result
    return sections


def write_claims_page(result: RunResult, page) -> None:
    """The chapter that tests the study's claims on this build's results (:mod:`generator.claims`)."""
    from .claims import claims_context

    page("chapters/claims.md.j2", "chapters/claims.md", **claims_context(result))


def chapter_list(result: RunResult) -> list[dict[str, str]]:
    """The site's chapters in the study's order: two explanatory pages, then one per section."""
    chapters = [{"title": "The attention mechanism", "path": "chapters/attention.md"},
                {"title": "Obtaining attention", "path": "chapters/obtaining.md"}]
    for section in enabled_sections(result):
        slug, title, _ = section.chapter
        chapters.append({"title": title, "path": f"chapters/{slug}.md"})
    chapters.append({"title": "The study's claims, tested", "path": "chapters/claims.md"})
    chapters.append({"title": "Reproducibility", "path": "reproducibility.md"})
    return chapters


def figure_index(result: RunResult) -> list[dict[str, str]]:
    """Every written figure with its caption, in page order."""
    names = {i.slug: i.name for i in result.images}
    models = {m.name: m.display_name for m in result.models}
    rows = []
    for r in result.results:
        for figure_id, ref in r.figures.items():
            section = r.section if not figure_id else f"{r.section} ({figure_id})"
            rows.append({"section": section, "model": models.get(r.model, r.model), "image": names.get(r.image, r.image),
                         "image_slug": r.image, "caption": ref.caption, "png": ref.png, "pdf": ref.pdf})
    return rows


def _remove_stale_pages(docs: Path, keep: list[Path]) -> None:
    """Drop Markdown pages of images that are no longer in the set (strict builds would list them)."""
    keep_set = {p.resolve() for p in keep}
    for path in (docs / "images").glob("*.md"):
        if path.resolve() not in keep_set:
            path.unlink()


def nav(result: RunResult) -> list[Any]:
    """Navigation mirroring the study's chapters, then the images, figures and the run report.

    mkdocs and its theme print titles as raw HTML, so every title is HTML-escaped here.
    """
    def entry(title: str, target: Any) -> dict[str, Any]:
        return {html.escape(title, quote=True): target}

    return (
        [entry("Introduction", "index.md")]
        + [entry(c["title"], c["path"]) for c in chapter_list(result)]
        + [entry("Images", [entry(image.name, f"images/{image.slug}.md") for image in result.images]),
           entry("Figures", "figure-list.md"),
           entry("Run report", "run-report.md")]
    )


def write_mkdocs_config(result: RunResult, base_config: Path | None = None) -> Path:
    """Write ``<output>/mkdocs.yml``: inherits the project's theme and adds docs_dir, site_dir, nav."""
    import json

    out = result.config.output
    target = out / "mkdocs.yml"
    inherit = os.path.relpath(base_config or resources.theme_config(), out)
    lines = [
        "# Generated by the gallery generator; edit the project's mkdocs.yml instead.",
        f"INHERIT: {json.dumps(inherit)}",
        f"site_name: {json.dumps(html.escape(result.config.title, quote=True))}",  # printed as raw HTML
        "docs_dir: docs",
        f"site_dir: {json.dumps(str(result.config.site_dir))}",
        f"nav: {json.dumps(nav(result), ensure_ascii=False)}",
    ]
    write_if_changed(target, ("\n".join(lines) + "\n").encode("utf-8"))
    return target


class SiteBuildError(RuntimeError):
    """mkdocs failed; the message holds its output."""


def build_site(mkdocs_config: Path, site_dir: Path | None = None) -> None:
    """Run ``mkdocs build --strict`` on the generated config.

    ``site_dir`` (the config's) is checked again and marked as the tool's own first: mkdocs
    empties it, so it must be new, empty, or marked by an earlier build.
    """
    if site_dir is not None:
        problem = folder_problem(site_dir, "site_dir", {})
        if problem:
            raise SiteBuildError(f"site not built: {problem}")
        claim_folder(site_dir, "site_dir")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "--quiet", "-f", str(mkdocs_config)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    if proc.returncode != 0:
        raise SiteBuildError(f"mkdocs build failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}".strip())
