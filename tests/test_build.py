"""End to end: the shared tiny gallery (conftest.built_gallery) → figures, Markdown pages and a strict
mkdocs site; rebuilds of private copies for what changes a gallery."""

from __future__ import annotations

import json
import re
from html import escape as html_escape
import subprocess
import sys
from pathlib import Path

from generator.config.loading import load_config

from .conftest import HOSTILE_IMAGE, HOSTILE_LABELS
from .expected import (
    SECTION_MODELS,
    SLUGS,
    TINY_FAMILIES,
    check_tables_cover,
    expected_jobs,
    of_model,
    of_section,
    summary,
    written_jobs,
)


def md_cell(text: str) -> str:
    """A table cell as the pages write plain text (the site's own escaping of user text)."""
    from generator.site.pages import escape_md

    return str(escape_md(text))


def build(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "generator", "build", "--config", str(config), "--quiet", *args],
                          capture_output=True, text=True, timeout=600)


def test_expected_jobs_cover_every_registered_section():
    from generator.sections import SECTIONS

    check_tables_cover([cls.name for cls in SECTIONS])


def test_build_produces_site_with_every_page_and_figure(built_gallery):
    cfg = load_config(built_gallery.config)
    docs, site = cfg.output / "docs", cfg.site_dir
    slugs = sorted(SLUGS[name] for name in ("synthetic 0.png", "synthetic 1.png", HOSTILE_IMAGE))
    for slug in slugs:
        assert (docs / "images" / f"{slug}.md").is_file()
        assert (site / "images" / f"{slug}.html").is_file()
        # heads is a ViT section: the ViT has figures, the Swin has none
        assert (docs / "figures" / "heads" / "tiny-vit" / f"{slug}.png").is_file()
        assert (site / "figures" / "heads" / "tiny-vit" / f"{slug}.png").is_file()
        for folder in ("rollout", "rollout-progression", "rollout-gradient"):
            assert (site / "figures" / folder / "tiny-vit" / f"{slug}.png").is_file()
        for model in ("tiny-vit", "tiny-swin"):
            assert (site / "figures" / "lime" / model / f"{slug}.png").is_file()
        for folder in ("swin-s1b1", "swin-rollout"):
            assert (site / "figures" / folder / "tiny-swin" / f"{slug}.png").is_file()
        assert not (docs / "figures" / "heads" / "tiny-swin").exists()
    assert (site / "index.html").is_file() and (site / "run-report.html").is_file()

    # every figure a page references exists; PDFs are the export's (run.pdf is off), none in the site
    pages = sorted((docs / "images").glob("*.md"))
    assert [p.stem for p in pages] == slugs
    for page in pages:
        text = page.read_text(encoding="utf-8")
        refs = re.findall(r'src="\.\./(figures/[^"]+)\.png"', text)
        assert refs, page
        assert ".pdf" not in text
        for ref in refs:
            assert (docs / f"{ref}.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(docs.rglob("*.pdf")) and not list(site.rglob("*.pdf"))

    # the HTML file name is escaped, never injected
    html = (site / "images" / "b-x-y-b.html").read_text(encoding="utf-8")
    # user text is written as numeric character references; read them as the named ones
    html = re.sub(r"&#(\d+);", lambda m: html_escape(chr(int(m[1]))), html)
    assert "<b>x&y" not in html and "&lt;b&gt;x&amp;y&lt;|b&gt;" in html
    assert f"{html_escape(HOSTILE_LABELS[0][:-1])}" in html  # a class name in the prediction line
    # random weights are said on the page and in the figure caption
    assert "random weights" in html

    report = json.loads((cfg.output / "run_report.json").read_text())
    assert report["failures"] == []
    # every enabled section × model it explains × image it applies to (perturb: synthetic-0, which has variants)
    jobs = expected_jobs(built_gallery.config)
    assert ("perturb", "Tiny ViT", "synthetic-0") in jobs and ("perturb", "Tiny Swin", "synthetic-1") not in jobs
    assert ("probe", "Tiny Swin", "colours") in jobs and ("stats", "Tiny ViT", "image-set") in jobs
    assert written_jobs(docs) == jobs
    assert report["jobs"]["total"] == len(jobs)
    for model in ("tiny-vit", "tiny-swin"):
        for ext in ("png", "csv", "json"):
            assert (site / "figures" / "perturb" / model / f"synthetic-0.{ext}").is_file()
    assert "Original top" in (docs / "chapters" / "location-and-size.md").read_text()
    assert "IoU of top" in (docs / "images" / "synthetic-0.md").read_text()
    assert {m["name"]: m["family"] for m in report["models"]} == TINY_FAMILIES
    assert all(len(m["weights_sha256"]) == 64 for m in report["models"])


def test_the_site_stays_light(built_gallery):
    """What keeps the default gallery's site under 25 MB (README, "Size"), on the shared gallery: no
    PDFs; every figure's PNG at the site's screen dpi and at most twice the column it is read in
    (a high-density screen's pixels, no more); none of the theme's search support for other languages."""
    from PIL import Image

    from generator.render.style import DISPLAY_WIDTH_PX

    cfg = load_config(built_gallery.config)
    site = cfg.site_dir
    assert cfg.run.dpi <= 100 and not cfg.run.pdf
    figures = sorted((site / "figures").rglob("*.png"))
    assert figures and not list(site.rglob("*.pdf"))
    for png in figures:
        with Image.open(png) as image:
            assert round(image.info["dpi"][0]) == cfg.run.dpi, png
            assert image.width <= 2 * DISPLAY_WIDTH_PX, (png, image.size)
    assert not (site / "assets" / "javascripts" / "lunr").exists()


def test_probe_chapter_with_a_missing_dataset(built_gallery, gallery_copy):
    """The shared gallery's probe names a dataset that is not there: skipped with where to get it."""
    out = built_gallery.stdout
    assert "2 jobs skipped" in out and "no failures" in out
    assert "eurosat" in out and "github.com/phelber/EuroSAT" in out
    cfg = load_config(built_gallery.config)
    page = (cfg.output / "docs" / "chapters" / "fine-tuning.md").read_text()
    assert "| Tiny ViT" in page and "missing" in page  # … and the rest of the table is there
    for model in ("tiny-vit", "tiny-swin"):
        for ext in ("png", "csv", "json"):
            assert (cfg.site_dir / "figures" / "probe" / model / f"colours.{ext}").is_file()
    report = json.loads((cfg.output / "run_report.json").read_text())
    assert report["failures"] == [] and [(s["model"], s["unit"]) for s in report["skipped"]] == [
        ("Tiny ViT", "eurosat"), ("Tiny Swin", "eurosat")]
    assert "github.com/phelber/EuroSAT" in (cfg.output / "docs" / "index.md").read_text()
    strict = build(gallery_copy, "--no-site", "--strict")  # --strict: the skip is a failure (exit 1)
    assert strict.returncode == 1 and "2 jobs skipped" in strict.stdout


def test_second_build_uses_cache_and_bad_image_fails_alone(gallery_copy):
    jobs = expected_jobs(gallery_copy)
    images = gallery_copy.parent / "images"
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    proc = build(gallery_copy, "--no-site")
    assert proc.returncode == 1
    assert "broken.png" in proc.stdout and "1 FAILURE" in proc.stdout
    assert summary(jobs, cached=len(jobs)) in proc.stdout
    report = json.loads((load_config(gallery_copy).output / "run_report.json").read_text())
    assert [f["image"] for f in report["failures"]] == ["broken.png"]


def test_failing_model_does_not_stop_the_others(gallery_copy):
    text = gallery_copy.read_text().replace('weights = "random:1"', 'weights = "hub"', 1)
    text = text.replace('arch = "swin_fmnist_patch2_28"', 'arch = "swin_tiny_patch4_window7_224"')
    gallery_copy.write_text(text)
    proc = build(gallery_copy, "--no-site")
    assert proc.returncode == 1
    assert "Tiny Swin" in proc.stdout and "file:" in proc.stdout
    # the ViT's jobs all ran, on every image (from the copied cache), and nothing of the Swin's
    vit_jobs = of_model(expected_jobs(gallery_copy), "Tiny ViT")
    assert summary(vit_jobs, cached=len(vit_jobs)) in proc.stdout
    report = json.loads((load_config(gallery_copy).output / "run_report.json").read_text())
    assert [f["model"] for f in report["failures"]] == ["Tiny Swin"]


def test_faithfulness_section_and_chapter(built_gallery):
    import numpy as np

    cfg = load_config(built_gallery.config)
    chapter = (cfg.output / "docs" / "chapters" / "faithfulness.md").read_text()
    assert "Ranking per model" in chapter and "Insertion − deletion" in chapter
    figures = cfg.output / "docs" / "figures" / "faithfulness"
    from generator.families import missing_needs
    from generator.relevance.registry import map_specs

    def registered(family: str) -> list[str]:  # every enabled map of the registry the family can give, in order
        return [spec.title for spec in map_specs(cfg) if not missing_needs(spec.method.needs, family)]

    for model, family, own in (("tiny-vit", "vit", {"rollout (mean)", "rollout (max)", "rollout (min)",
                                                    "gradient rollout", "last-block CLS attention", "LIME"}),
                               ("tiny-swin", "swin", {"Swin rollout", "last-stage window attention", "LIME"})):
        rows = json.loads((figures / model / "synthetic-0.json").read_text())
        assert [row["method"] for row in rows] == registered(family)
        assert own <= {row["method"] for row in rows}
        # each AUC is the trapezoid area under the curve the figure draws, over the share of cells changed
        curves = json.loads((figures / model / "synthetic-0.data.json").read_text())
        shares = np.asarray(curves["share_changed"])
        assert shares[0] == 0.0 and shares[-1] == 1.0 and np.all(np.diff(shares) > 0)
        for row in rows:
            for kind in ("deletion", "insertion"):
                area = np.trapezoid(np.asarray(curves[kind][row["method"]], dtype=np.float64), shares)
                assert abs(row[f"{kind}_auc"] - area) < 1e-6, (model, row["method"], kind, row[f"{kind}_auc"], area)


def test_figures_export_at_a_chosen_dpi(gallery_copy, tmp_path):
    from PIL import Image

    from .test_reliability import disable_sections

    disable_sections(gallery_copy, [name for name in SECTION_MODELS if name != "heads"])  # heads: enough to draw
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "generator", "figures", "--config", str(gallery_copy), "--dpi", "72",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    png = out / "figures" / "heads" / "tiny-vit" / "synthetic-0.png"
    assert png.is_file() and (out / "figures" / "heads" / "tiny-vit" / "synthetic-0.pdf").is_file()
    dpi = Image.open(png).info.get("dpi")
    assert dpi and round(dpi[0]) == 72


def test_pdfs_are_opt_in_and_a_switched_off_pdf_goes(tmp_path):
    """``run.pdf`` on: each figure's PDF is written and listed; off: the PNG only, and the PDF an
    earlier build left beside it is deleted (the site never publishes a stale one)."""
    from types import SimpleNamespace

    from generator.store.cache import ResultCache
    from generator.pipeline.outputs import _render
    from generator.render.style import new_figure

    class OneFigure:
        name = "heads"

        def render(self, record):
            fig = new_figure(2.0, 1.0)
            fig.add_subplot().plot([0, 1], [1, 0])
            return {"": fig}

        def caption(self, record, figure_id):
            return "a line"

    record, job = SimpleNamespace(image="img"), SimpleNamespace(key="ab" * 32)
    cache, docs = ResultCache(tmp_path / "cache"), tmp_path / "docs"
    pdf = docs / "figures" / "heads" / "m" / "img.pdf"
    on = _render(OneFigure(), record, job, cache, docs, "m", 100, pdf=True)
    assert on[""].pdf == "figures/heads/m/img.pdf" and pdf.read_bytes()[:4] == b"%PDF"
    off = _render(OneFigure(), record, job, cache, docs, "m", 100, pdf=False)
    assert off[""].pdf is None and not pdf.exists() and (docs / off[""].png).is_file()
    assert _render(OneFigure(), record, job, cache, docs, "m", 100, pdf=True)[""].pdf and pdf.is_file()


def test_section_subcommand_runs_only_that_section(tiny_gallery):
    proc = subprocess.run([sys.executable, "-m", "generator", "heads", "--config", str(tiny_gallery), "--quiet",
                           "--no-site"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = load_config(tiny_gallery)
    report = json.loads((cfg.output / "run_report.json").read_text())
    jobs = expected_jobs(tiny_gallery, only="heads")
    assert jobs == {("heads", "Tiny ViT", "synthetic-0"), ("heads", "Tiny ViT", "synthetic-1")}
    assert written_jobs(cfg.output / "docs") == jobs
    assert set(report["section_seconds"]) == {"heads"} and report["jobs"]["total"] == len(jobs)


def test_manifest_holds_real_versions_and_hashes(built_gallery):
    import hashlib
    from importlib.metadata import version

    cfg = load_config(built_gallery.config)
    page = (cfg.output / "docs" / "reproducibility.md").read_text()
    report = json.loads((cfg.output / "run_report.json").read_text())
    for package in ("torch", "timm", "lime", "mkdocs-material"):
        assert f"| {md_cell(package)} | {md_cell(version(package))} |" in page, package
    assert [m["name"] for m in report["models"]] == [m.name for m in cfg.models]
    for model in report["models"]:
        assert model["weights_sha256"] in page
    images = {i["file"]: i for i in report["images"]}
    assert sorted(images) == sorted(p.name for p in cfg.images.glob("*.png"))
    for name, image in images.items():  # the hash of the file's bytes, computed here
        assert image["sha256"] == hashlib.sha256((cfg.images / name).read_bytes()).hexdigest()
        assert image["sha256"] in page
    assert "vit-gallery build" in page and "random:0" in page  # the command and the config text
