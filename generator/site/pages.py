"""Pages: the Jinja2 environment, the Markdown page writers, and the mkdocs build.

Every value printed into a page is escaped for Markdown and HTML by default (the
environment's ``finalize``); only values wrapped in :class:`markupsafe.Markup` (paths made
of slugs, Markdown built here) pass through unchanged.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import zipfile
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from PIL import Image

from . import resources
from ..store.atomic import write_if_changed
from ..pipeline.report import run_report_dict, trimmed_traceback
from ..pipeline.results import Failure, JobResult, RunResult
from ..data.known_labels import read_known_labels
from ..pipeline.outcomes import skip_lines
from ..render.pngopt import optimise_png
from ..store.safepaths import claim_folder, ensure_inside, folder_problem
from ..sections import SECTIONS


#: Characters that mean something to Markdown (or to the extensions used here) or to HTML.
_SPECIAL = set("\\`*_{}[]()#+!|~-<>&\"'")


def escape_md(value: Any) -> str:
    """Escape a user string for a page: every Markdown or HTML special character becomes a numeric
    character reference.

    The result reads the same wherever it lands (Markdown text, a table cell, a tab label, a
    heading, or raw HTML such as a figure caption, where backslash escapes would show), and can
    never open a tag, a link, a heading or a table cell.

    >>> escape_md("<b>x&y</b>_1")
    '&#60;b&#62;x&#38;y&#60;/b&#62;&#95;1'
    """
    return "".join(f"&#{ord(c)};" if c in _SPECIAL else c for c in str(value))


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
    """The near-chance caveat of a prediction (:func:`generator.analysis.findings.near_chance`), as a dict, or None."""
    from dataclasses import asdict

    from ..analysis.findings import near_chance

    caveat = near_chance(float(top_prob), int(num_classes))
    return asdict(caveat) if caveat else None


def _thumbnail(rgb: np.ndarray, path: Path, size: int = 256) -> None:
    image = Image.fromarray(rgb)
    scale = size / max(image.size)
    resample = Image.Resampling.NEAREST if scale > 2 else Image.Resampling.LANCZOS
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    write_if_changed(path, optimise_png(buffer.getvalue()))


def page_extras(section, results) -> dict:
    """A section's page extras, with every DataFrame turned into an escaped Markdown table."""
    return {k: markdown_table(v) if hasattr(v, "to_markdown") else v
            for k, v in section.page_extras(results).items()}


def markdown_table(frame) -> Markup:
    """A pandas DataFrame as a Markdown table, every cell escaped, with a blank line before and after.

    The blank lines are part of the table: a table must never run into the next line (a heading
    after it would become a table row). Already-converted tables pass through unchanged.
    """
    if isinstance(frame, Markup):
        return frame
    escaped = frame.map(lambda v: escape_md(v) if isinstance(v, str) else v)
    escaped.columns = [escape_md(c) for c in frame.columns]
    return Markup("\n" + escaped.to_markdown(index=False) + "\n\n")


_FENCE = re.compile(r"^\s*(```|~~~)")


def blank_lines_around_tables(text: str) -> str:
    """Insert a blank line wherever a Markdown table row is followed (or preceded) by a non-table line.

    The safety net behind :func:`markdown_table`: hand-written tables in templates get the same
    guarantee. Fenced code blocks are left alone.
    """
    out: list[str] = []
    fenced = False
    previous_row = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        stripped = line.strip()
        row = not fenced and stripped.startswith("|")
        if not fenced and stripped and not row and previous_row:
            out.append("")
        if row and not previous_row and out and out[-1].strip():
            out.append("")
        out.append(line)
        previous_row = row
    return "\n".join(out)


def unique_labels(labels: list[Any]) -> list[str]:
    """Tab labels, unique within their set by construction: a repeated label gets " (2)", " (3)" …

    mkdocs-material links tabs by label, so two tabs with one label cannot both be opened.
    """
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        text = str(label)
        seen[text] = seen.get(text, 0) + 1
        candidate = text if seen[text] == 1 else f"{text} ({seen[text]})"
        while candidate in out:
            seen[text] += 1
            candidate = f"{text} ({seen[text]})"
        out.append(candidate)
    return out


def figure_downloads(result, figure_id: str, docs: Path) -> list[tuple[str, str]]:
    """(label, path relative to the docs folder) of everything behind one figure: PNG, PDF (when written), the
    numbers it draws (``.data.json``), and its section's table when one belongs to this figure."""
    from ..render import data_path

    ref = result.figures[figure_id]
    links = [("PNG", ref.png)] + ([("PDF", ref.pdf)] if ref.pdf else [])
    data = data_path(ref.png)
    if (docs / data).is_file():
        links.append(("data (JSON)", data))
    table = result.tables.get(figure_id)
    if table:
        links += [("table (CSV)", table["csv"]), ("table (JSON)", table["json"])]
    return links


def figure_html(result, figure_id: str, prefix: str, docs: Path) -> Markup:
    """One figure as a single line of HTML: the image (alt text: its caption), and a caption that
    ends with its download links. glightbox shows the same caption (``data-description`` names
    the figcaption by a class unique to the figure). The figure is left out of the search index
    (``data-search-exclude``): the same captions on every page and the figure list made the index,
    which every page loads first, about half a megabyte for the default gallery.

    Raw HTML on one line renders the same at the top level and inside an indented tab; every
    piece of text in it is escaped with :func:`escape_md`, which reads the same in both. Paths
    are relative to the page's Markdown file, which is also the HTML file's folder because the
    site is built with ``use_directory_urls: false``.
    """
    ref = result.figures[figure_id]
    caption = escape_md(ref.caption)
    key = "vgcap-" + hashlib.sha1(ref.png.encode("utf-8")).hexdigest()[:12]
    links = " · ".join(f'<a href="{html.escape(prefix + path, quote=True)}">{label}</a>'
                       for label, path in figure_downloads(result, figure_id, docs))
    src = html.escape(prefix + ref.png, quote=True)
    return Markup(f'<figure class="vg-figure" data-search-exclude><img src="{src}" alt="{caption}" loading="lazy" '
                  f'data-description=".{key}"><figcaption class="{key}">{caption} '
                  f'<span class="vg-downloads">{links}</span></figcaption></figure>')


#: Image notes that describe a lossless, routine step: kept in the run report, not shown to readers.
_ROUTINE_NOTE = re.compile(r"^(L|1|I;16|I;16B|I;16L|I|F|LA) converted to RGB$")


def reader_notes(image) -> list[str]:
    """The notes about an image that change what a reader sees (alpha, EXIF rotation, upscaling …)."""
    return [n for n in image.notes if not _ROUTINE_NOTE.match(n)]


def image_facts(image) -> list[str]:
    """Short facts for the image's file line ("greyscale")."""
    return ["greyscale" if any(n.startswith(("L converted", "1 converted", "LA ")) for n in image.notes) else "colour"]


def predictions(result: RunResult, known: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Image slug → one row per model: its top-1 class and probability, and whether it matches the
    image's known label (None when there is none). Read from the first result that has a prediction."""
    from ..render.text import label_matches

    names = {i.slug: i.name for i in result.images}
    folder_labels = {i.slug: i.known_label for i in result.images if i.known_label is not None}  # dataset mode
    order = {m.name: i for i, m in enumerate(result.models)}
    display = {m.name: m.display_name for m in result.models}
    section_order = {cls.name: i for i, cls in enumerate(SECTIONS)}
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in sorted(result.results, key=lambda r: section_order.get(r.section, 99)):
        top = r.meta.get("top") if isinstance(r.meta, dict) else None
        if not top or r.image not in names or r.model in out[r.image]:
            continue
        label = known.get(names[r.image], folder_labels.get(r.image))
        index = top[0].get("index")
        out[r.image][r.model] = {"model": display.get(r.model, r.model), "label": top[0]["label"],
                                 "prob": float(top[0]["prob"]), "known": label,
                                 "correct": None if label is None else label_matches(
                                     label, str(top[0]["label"]), None if index is None else int(index))}
    return {image: sorted(rows.values(), key=lambda row: order.get(row["model"], 0))
            for image, rows in out.items()}


ASSETS_DIR = Path(__file__).resolve().parent / "assets" / "site"


def copy_site_assets(docs: Path) -> list[Path]:
    """Copy the gallery's CSS and JavaScript (and the vendored file:// worker shim) into the docs."""
    written = []
    for source in sorted(ASSETS_DIR.iterdir()):
        if source.is_file() and source.suffix in (".css", ".js"):
            target = docs / "assets" / "vit-gallery" / source.name
            write_if_changed(target, source.read_bytes())
            written.append(target)
    return written


#: A fixed timestamp for archive entries (the zip format's earliest): archives are byte-stable.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def deterministic_zip(files: list[tuple[str, Path]]) -> bytes:
    """A zip of (name in the archive, file) pairs, sorted by name, with fixed dates and modes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, path in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            with path.open("rb") as handle:
                archive.writestr(info, handle.read())
    return buffer.getvalue()


def write_figure_archive(result: RunResult, target: Path) -> Path | None:
    """One deterministic zip of every figure of ``result`` (PNG and PDF, with their data files) at ``target``.

    Opt-in (``vit-gallery figures --zip FILE``): the site links each figure's files one by one and
    carries no second copy of them.
    """
    from ..render import data_path

    docs = result.docs_dir
    files = []
    for r in result.results:
        for ref in r.figures.values():
            for rel in (ref.png, ref.pdf, data_path(ref.png)):
                if rel and (docs / rel).is_file():
                    files.append((rel, docs / rel))
    if not files:
        return None
    write_if_changed(target, deterministic_zip(sorted(set(files))))
    return target


class PageWriter:
    """Renders templates into ``docs``; a page (or a block of one) that cannot be made becomes a
    failure record and a page saying so, and every other page is kept."""

    def __init__(self, result: RunResult, templates_dir: Path | None = None) -> None:
        self.result = result
        self.docs = result.docs_dir
        self.env = make_environment(templates_dir)
        add_page_globals(self.env, result)
        self.written: list[Path] = []

    def write(self, target: str, text: str) -> None:
        path = self.docs / target
        ensure_inside(self.docs, path)
        write_if_changed(path, text.encode("utf-8"))
        self.written.append(path)

    def record_failure(self, target: str, owner: str | None, exc: Exception, image: str | None = None) -> str:
        """Record a page (or a block of one) that could not be made as a failure; return its message."""
        error = f"{target}: {type(exc).__name__}: {exc}"
        self.result.failures.append(Failure(stage="page", section=owner, image=image, error=error,
                                            traceback=trimmed_traceback(exc)))
        return error

    def failed(self, target: str, owner: str | None, exc: Exception) -> None:
        error = self.record_failure(target, owner, exc)
        self.write(target, f"# {escape_md(Path(target).stem)}\n\n!!! failure \"This page could not be rendered\"\n"
                           f"    {escape_md(error)}\n\n    The run report lists it with its traceback.\n")

    def page(self, template: str, target: str, *, owner: str | None = None,
             context: Callable[[], dict[str, Any]] | None = None, **values: Any) -> None:
        """Render ``template`` into ``target``; ``context`` (called here) gathers what may fail too."""
        try:
            if context is not None:
                values = {**context(), **values}
            text = blank_lines_around_tables(self.env.get_template(template).render(**values))
        except Exception as exc:  # a template or its summary meeting data it did not expect
            self.failed(target, owner, exc)
            return
        self.write(target, text)


def write_pages(result: RunResult, templates_dir: Path | None = None) -> list[Path]:
    """Write every Markdown page of the gallery into ``result.docs_dir``; return their paths."""
    pages = PageWriter(result, templates_dir)
    copy_site_assets(result.docs_dir)
    known = read_known_labels(result.config.images)
    predicted = predictions(result, known.labels)
    by_image = results_by_image(result)
    write_image_pages(pages, by_image, known, predicted)
    write_chapter_pages(pages, by_image)
    write_front_pages(pages, known, predicted)
    from .explorer import write_explorer_assets  # listed on every page by the theme

    write_explorer_assets(result.docs_dir)
    _remove_stale_pages(result.docs_dir, pages.written)
    _remove_legacy_archive(result.docs_dir)
    _remove_stale_explorers(result.docs_dir, result)
    return pages.written


def results_by_image(result: RunResult) -> dict[str, dict[str, list[JobResult]]]:
    """image slug → section name → that section's results, in the config's model order."""
    model_order = {m.name: i for i, m in enumerate(result.models)}
    by_image: dict[str, dict[str, list[JobResult]]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(result.results, key=lambda r: model_order.get(r.model, 0)):
        by_image[r.image][r.section].append(r)
    return by_image


def write_image_pages(pages: PageWriter, by_image, known, predicted) -> None:
    """One page per image: a block per section that has results for it."""
    result = pages.result
    models = {m.name: m for m in result.models}
    for image in result.images:
        _thumbnail(image.rgb, pages.docs / "inputs" / f"{image.slug}.png")
        target = f"images/{image.slug}.md"
        blocks = []
        for section in (s for s in enabled_sections(result) if s.per_image):
            items = by_image[image.slug].get(section.name, [])
            skips = model_skips(result, section)
            if items:
                try:
                    extras = page_extras(section, items)
                except Exception as exc:  # this section's block is left out, and the failure reported
                    pages.record_failure(target, section.name, exc, image=image.slug)
                    continue
                blocks.append({"section": section, "results": items, "extras": extras, "skips": skips})
            elif skips:
                blocks.append({"section": section, "results": [], "extras": {}, "skips": skips})
        failures = [f for f in result.failures if f.image == image.slug]
        pages.page("image.md.j2", target, image=image, blocks=blocks, models=models, failures=failures,
                   predictions=predicted.get(image.slug, []), known=known.labels.get(image.name))


def model_skips(result: RunResult, section) -> list:
    """The skips of ``section`` for models whose family has what it needs but which lack it themselves
    (a headless backbone, a ViT without class token): the page says so where the figure would be.
    A family that never has it (windows for a ViT) goes unsaid."""
    from ..families import family_named

    family_of_model = {m.name: m.family for m in result.models}
    shown = []
    for skip in result.not_applicable:
        if skip.section != section.name or skip.model not in family_of_model:
            continue
        family = family_named(family_of_model[skip.model])
        if not family.missing(section.needs) and (not section.needs_any or section.needs_any & family.capabilities):
            shown.append(skip)
    return shown


def write_chapter_pages(pages: PageWriter, by_image) -> None:
    """One chapter per enabled section: per-image sections list their images, unit sections their units."""
    result = pages.result
    model_order = {m.name: i for i, m in enumerate(result.models)}
    models = {m.name: m for m in result.models}
    for section in enabled_sections(result):
        slug, title, intro = section.chapter
        chapter = {"title": title, "intro": intro}
        all_results = [r for r in result.results if r.section == section.name]
        if not section.per_image:
            items = sorted(all_results, key=lambda r: model_order.get(r.model, 0))
            pages.page("chapters/unit-section.md.j2", f"chapters/{slug}.md", owner=section.name, chapter=chapter,
                       section=section, results=items, models=models, config=result.config,
                       context=lambda s=section, items=items: {"extras": page_extras(s, items)})
            continue

        def entries(section=section, all_results=all_results) -> dict[str, Any]:
            found = [{"image": image, "section": section, "results": items, "extras": page_extras(section, items)}
                     for image in result.images if (items := by_image[image.slug].get(section.name, []))]
            return {"entries": found, "chapter_extras": section.chapter_extras(all_results)}

        pages.page("chapters/section.md.j2", f"chapters/{slug}.md", owner=section.name, chapter=chapter,
                   models=models, context=entries)


def write_front_pages(pages: PageWriter, known, predicted) -> None:
    """The home page, the explanatory chapters, the claims, reproducibility, figure list and run report."""
    result = pages.result
    run_report = run_report_dict(result)
    pages.page("index.md.j2", "index.md", config=result.config, images=result.images, models=result.models,
               report=run_report, predictions=predicted, known=known,
               context=lambda: {"chapters": chapter_list(result), "failed_models": failed_models(result),
                                "skipped": [line.strip() for line in skip_lines(result.skipped)[1:]]})
    pages.page("chapters/attention.md.j2", "chapters/attention.md", models=result.models)
    pages.page("chapters/obtaining.md.j2", "chapters/obtaining.md")
    if result.models:  # with no model loaded there is no claim to test
        from ..analysis.claims import claims_context

        pages.page("chapters/claims.md.j2", "chapters/claims.md", context=lambda: claims_context(result))
    config_text = result.config.source.read_text(encoding="utf-8") if result.config.source else ""
    pages.page("reproducibility.md.j2", "reproducibility.md", report=run_report, config=result.config,
               config_text=config_text)
    pages.page("figure-list.md.j2", "figure-list.md", dpi=result.config.run.dpi, pdf=result.config.run.pdf,
               context=lambda: figure_list(pages.docs, result))
    pages.page("run-report.md.j2", "run-report.md", report=run_report, failures=result.failures)


def figure_list(docs: Path, result: RunResult) -> dict[str, Any]:
    """The figure list's rows, with a small thumbnail of each figure written beside the docs."""
    figures = figure_index(result)
    write_figure_thumbnails(docs, figures)
    return {"figures": figures}


def add_page_globals(env: Environment, result: RunResult) -> None:
    """What templates need beyond their context: figures with downloads, data links, unique tab labels."""
    from ..render.text import fmt_pct

    docs = result.docs_dir
    slugs = {m.name: m.slug for m in result.models}
    env.globals["figure_html"] = lambda r, figure_id, prefix: figure_html(r, figure_id, prefix, docs)
    env.globals["data_path"] = lambda r: Markup(f"data/{r.section}/{slugs.get(r.model, r.model)}/{r.image}.json")
    env.globals["unique_labels"] = unique_labels
    env.globals["verdict"] = verdict
    env.filters["model_name"] = lambda model, models: models[model].display_name if model in models else str(model)
    env.filters["tab_name"] = lambda item, models: (
        (models[item["r"].model].display_name if item["r"].model in models else str(item["r"].model))
        + (f" · {item['variant']}" if item["variant"] else ""))
    env.globals["reader_notes"] = reader_notes
    env.globals["image_facts"] = image_facts
    env.filters["pct"] = fmt_pct


def verdict(correct: bool | None, words: bool = False) -> Markup:
    """✓ / ✗ (with "yes" / "no" when ``words``) for a prediction against a known label; empty when unknown."""
    if correct is None:
        return Markup("")
    if correct:
        return Markup(f' <span class="vg-right" title="matches the known label">✓{" yes" if words else ""}</span>')
    return Markup(f' <span class="vg-wrong" title="does not match the known label">✗{" no" if words else ""}</span>')


def failed_models(result: RunResult) -> list[dict[str, str]]:
    """The models that could not be loaded, with their config entry and why."""
    configs = {m.name: m for m in result.config.models}
    return [{"name": f.model, "arch": configs[f.model].arch if f.model in configs else "",
             "weights": configs[f.model].weights if f.model in configs else "", "error": f.error}
            for f in result.failures if f.stage == "model"]


def enabled_sections(result: RunResult) -> list:
    """The sections switched on in the config (none when no model loaded: there is nothing to show)."""
    if not result.models:
        return []
    sections = [s for s in (cls(result.config) for cls in SECTIONS) if s.enabled()]
    for s in sections:  # extras that read another section's results (maps: the sanity check)
        s.build = result
    return sections


def chapter_list(result: RunResult) -> list[dict[str, str]]:
    """The site's chapters in the study's order: two explanatory pages, then one per section."""
    chapters = [{"title": "The attention mechanism", "path": "chapters/attention.md"},
                {"title": "Obtaining attention", "path": "chapters/obtaining.md"}]
    for section in enabled_sections(result):
        slug, title, _ = section.chapter
        chapters.append({"title": title, "path": f"chapters/{slug}.md"})
    if result.models:
        chapters.append({"title": "The study's claims, tested", "path": "chapters/claims.md"})
    chapters.append({"title": "Reproducibility", "path": "reproducibility.md"})
    return chapters


def figure_index(result: RunResult) -> list[dict[str, str]]:
    """Every written figure with its caption, in page order."""
    names = {i.slug: i.name for i in result.images}
    models = {m.name: m.display_name for m in result.models}
    titles = {cls.name: cls.title for cls in SECTIONS}
    docs = result.docs_dir
    rows = []
    for r in result.results:
        for figure_id, ref in r.figures.items():
            section = r.section if not figure_id else f"{r.section} ({figure_id})"
            rows.append({"section": section, "section_title": titles.get(r.section, r.section),
                         "model": models.get(r.model, r.model), "image": names.get(r.image, r.image),
                         "image_slug": r.image, "caption": ref.caption, "png": ref.png, "pdf": ref.pdf,
                         "downloads": figure_downloads(r, figure_id, docs), "per_image": r.image in names})
    return rows


#: The figure list's thumbnails: ``thumbnails/<figure path>.png``, this wide in pixels (the list's 120 CSS px).
THUMBNAIL_DIR = "thumbnails"
THUMBNAIL_WIDTH = 120


def write_figure_thumbnails(docs: Path, figures: list[dict[str, Any]]) -> None:
    """A small PNG of every figure for the figure list (``row["thumb"]``), so the list does not
    load every full-resolution figure; thumbnails of figures no longer written are removed.

    A figure already narrower than :data:`THUMBNAIL_WIDTH` is its own thumbnail.
    """
    keep = set()
    for row in figures:
        source = docs / row["png"]
        row["thumb"] = row["png"]
        try:
            with Image.open(source) as image:
                if image.width <= THUMBNAIL_WIDTH:
                    continue
                height = max(1, round(image.height * THUMBNAIL_WIDTH / image.width))
                small = image.convert("RGBA").resize((THUMBNAIL_WIDTH, height), Image.Resampling.LANCZOS)
        except OSError:  # a figure that cannot be read keeps its own link
            continue
        rel = f"{THUMBNAIL_DIR}/{row['png']}"
        target = docs / rel
        ensure_inside(docs, target)
        buffer = io.BytesIO()
        small.save(buffer, format="PNG")
        write_if_changed(target, optimise_png(buffer.getvalue()))
        row["thumb"] = rel
        keep.add(target.resolve())
    for path in sorted((docs / THUMBNAIL_DIR).rglob("*.png")) if (docs / THUMBNAIL_DIR).is_dir() else []:
        if path.resolve() not in keep:
            path.unlink()


def _remove_stale_pages(docs: Path, keep: list[Path]) -> None:
    """Drop Markdown pages of images no longer in the set, and of chapters not written this time
    (a section switched off, or no model loaded), so the site shows no stale results."""
    keep_set = {p.resolve() for p in keep}
    for path in [*(docs / "images").glob("*.md"), *(docs / "chapters").glob("*.md")]:
        if path.resolve() not in keep_set:
            path.unlink()


#: Where builds before ``vit-gallery verify`` put a second copy of every figure (now opt-in: ``figures --zip``).
_LEGACY_ARCHIVE = "downloads/figures.zip"


def _remove_legacy_archive(docs: Path) -> None:
    """Delete the figures archive an earlier build wrote into the docs (and its folder when left empty)."""
    archive = docs / _LEGACY_ARCHIVE
    if archive.is_file():
        archive.unlink()
        if not any(archive.parent.iterdir()):
            archive.parent.rmdir()


def _remove_stale_explorers(docs: Path, result: RunResult) -> None:
    """Drop explorer folders (``explorer/<model>/<image>/``) that this build did not write."""

    keep = {(docs / r.outputs["manifest"]).parent.resolve() for r in result.results if r.outputs.get("manifest")}
    for folder in (docs / "explorer").glob("*/*"):
        if folder.is_dir() and folder.resolve() not in keep:
            shutil.rmtree(folder)


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
    out = result.config.output
    target = out / "mkdocs.yml"
    inherit = os.path.relpath(base_config or resources.theme_config(), out)
    lines = [
        "# Generated by the gallery generator; edit the project's mkdocs.yml instead.",
        f"INHERIT: {json.dumps(inherit)}",
        f"site_name: {json.dumps(html.escape(result.config.title, quote=True))}",  # printed as raw HTML
        "docs_dir: docs",
        # Pages are files (images/x.html), as the offline plugin also sets: the raw-HTML figure
        # links are written relative to the Markdown file, and the site opens from disk.
        "use_directory_urls: false",
        f"site_dir: {json.dumps(str(result.config.site_dir))}",
        f"nav: {json.dumps(nav(result), ensure_ascii=False)}",
    ]

    write_if_changed(target, ("\n".join(lines) + "\n").encode("utf-8"))
    return target


class SiteBuildError(RuntimeError):
    """mkdocs failed; the message holds its output."""


def build_site(mkdocs_config: Path, site_dir: Path | None = None, keep_source_maps: bool = False) -> None:
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
    if site_dir is not None:
        strip_unused_search_languages(site_dir)
        if not keep_source_maps:
            strip_source_maps(site_dir)


def search_language_files(langs: list[str]) -> set[str]:
    """The files under the theme's ``assets/javascripts/lunr/`` that its search worker loads for
    the index's languages (the worker's own rule: English needs none; Japanese adds ``tinyseg.js``,
    Hindi and Thai ``wordcut.js``, more than one language ``lunr.multi``)."""
    extra = [f"min/lunr.{lang}.min.js" for lang in langs if lang != "en"]
    extra += ["tinyseg.js"] if "ja" in langs else []
    extra += ["wordcut.js"] if {"hi", "th"} & set(langs) else []
    extra += ["min/lunr.multi.min.js"] if len(langs) > 1 else []
    return {"min/lunr.stemmer.support.min.js", *extra} if extra else set()


def strip_unused_search_languages(site_dir: Path) -> int:
    """Delete the theme's search support for languages the site's index does not use (every
    language's stemmer and the Thai word list: 0.9 MB, none of it loaded for English). Returns the
    bytes removed; nothing when the index cannot be read."""
    lunr = site_dir / "assets" / "javascripts" / "lunr"
    try:
        langs = json.loads((site_dir / "search" / "search_index.json").read_text(encoding="utf-8"))["config"]["lang"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    if not lunr.is_dir():
        return 0
    keep = search_language_files(langs)
    removed = 0
    for path in sorted(lunr.rglob("*.js")):
        if path.relative_to(lunr).as_posix() not in keep:
            removed += path.stat().st_size
            path.unlink()
    for folder in sorted([lunr, *lunr.rglob("*")], key=lambda p: -len(p.parts)):  # deepest first
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


_SOURCE_MAP_COMMENT = re.compile(rb"\n?(//# sourceMappingURL=[^\n]*|/\*# sourceMappingURL=[^*]*\*/)\s*$")


def strip_source_maps(site_dir: Path) -> int:
    """Delete the theme's JavaScript/CSS source maps from a built site, and the comments that point
    to them (a browser's developer tools would otherwise ask for the missing files). Returns the
    bytes removed."""
    removed = 0
    for path in sorted(site_dir.rglob("*.map")):
        if path.is_file() and path.suffix == ".map":
            removed += path.stat().st_size
            path.unlink()
    for path in sorted(list(site_dir.rglob("*.js")) + list(site_dir.rglob("*.css"))):
        data = path.read_bytes()
        stripped = _SOURCE_MAP_COMMENT.sub(b"\n", data)
        if stripped != data:
            path.write_bytes(stripped)
    return removed
