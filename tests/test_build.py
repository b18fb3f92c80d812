"""End to end: a tiny config → figures, Markdown pages and a strict mkdocs site."""

from __future__ import annotations

import json
import re
from html import escape as html_escape
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from generator.config import load_config

from .conftest import write_synthetic_images
from .expected import (
    TINY_FAMILIES,
    expected_jobs,
    of_model,
    of_section,
    summary,
    written_jobs,
)


def md_cell(text: str) -> str:
    """A table cell as the pages write plain text (the site's own escaping of user text)."""
    from generator.site import escape_md

    return str(escape_md(text))


def build(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "generator", "build", "--config", str(config), "--quiet", *args],
                          capture_output=True, text=True, timeout=600)


def test_build_produces_site_with_every_page_and_figure(tiny_gallery):
    images = tiny_gallery.parent / "images"
    # '/' cannot be in a POSIX file name, so the class names carry the full "<b>x&y</b>"
    Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(images / "<b>x&y<|b>.png")
    labels = ", ".join(f'"<b>x&y</b> {i}"' for i in range(10))
    tiny_gallery.write_text(tiny_gallery.read_text().replace(
        'weights = "random:0"', f'weights = "random:0"\nlabels = [{labels}]', 1))
    (images / "synthetic 0.png.variants.toml").write_text(
        '[[variant]]\nname = "Moved"\nedit = [{ op = "move", box = [0, 0, 20, 20], to = [20, 20] }]\n')
    proc = build(tiny_gallery)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    cfg = load_config(tiny_gallery)
    docs, site = cfg.output / "docs", cfg.site_dir
    slugs = ["b-x-y-b", "synthetic-0", "synthetic-1"]
    for slug in slugs:
        assert (docs / "images" / f"{slug}.md").is_file()
        assert (site / "images" / f"{slug}.html").is_file()
        for ext in ("png", "pdf"):
            # heads is a ViT section: the ViT has figures, the Swin has none
            assert (docs / "figures" / "heads" / "tiny-vit" / f"{slug}.{ext}").is_file()
            assert (site / "figures" / "heads" / "tiny-vit" / f"{slug}.{ext}").is_file()
        for folder in ("rollout", "rollout-progression", "rollout-gradient"):
            assert (site / "figures" / folder / "tiny-vit" / f"{slug}.pdf").is_file()
        for model in ("tiny-vit", "tiny-swin"):
            assert (site / "figures" / "lime" / model / f"{slug}.png").is_file()
        for folder in ("swin-s1b1", "swin-rollout"):
            assert (site / "figures" / folder / "tiny-swin" / f"{slug}.png").is_file()
        assert not (docs / "figures" / "heads" / "tiny-swin").exists()
    assert (site / "index.html").is_file() and (site / "run-report.html").is_file()

    # every figure a page references exists, in both formats
    pages = sorted((docs / "images").glob("*.md"))
    assert [p.stem for p in pages] == sorted(slugs)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        refs = re.findall(r'src="\.\./(figures/[^"]+)\.png"', text)
        assert refs, page
        for ref in refs:
            assert (docs / f"{ref}.png").is_file() and (docs / f"{ref}.pdf").is_file()
            assert (docs / f"{ref}.png").read_bytes()[:4] == b"\x89PNG"
            assert (docs / f"{ref}.pdf").read_bytes()[:4] == b"%PDF"

    # the HTML file name is escaped, never injected
    html = (site / "images" / "b-x-y-b.html").read_text(encoding="utf-8")
    # user text is written as numeric character references; read them as the named ones
    html = re.sub(r"&#(\d+);", lambda m: html_escape(chr(int(m[1]))), html)
    assert "<b>x&y" not in html and "&lt;b&gt;x&amp;y&lt;|b&gt;" in html
    assert "&lt;b&gt;x&amp;y&lt;/b&gt; " in html  # a class name in the prediction line
    # random weights are said on the page and in the figure caption
    assert "random weights" in html

    report = json.loads((cfg.output / "run_report.json").read_text())
    assert report["failures"] == []
    # every enabled section × model of its family × image it applies to (perturb: synthetic-0, which has variants)
    jobs = expected_jobs(tiny_gallery)
    assert ("perturb", "Tiny ViT", "synthetic-0") in jobs and ("perturb", "Tiny Swin", "synthetic-1") not in jobs
    assert written_jobs(docs) == jobs
    assert report["jobs"]["total"] == len(jobs)
    for model in ("tiny-vit", "tiny-swin"):
        for ext in ("png", "pdf", "csv", "json"):
            assert (site / "figures" / "perturb" / model / f"synthetic-0.{ext}").is_file()
    assert "Original top" in (docs / "chapters" / "location-and-size.md").read_text()
    assert "IoU of top" in (docs / "images" / "synthetic-0.md").read_text()
    assert {m["name"]: m["family"] for m in report["models"]} == TINY_FAMILIES
    assert all(len(m["weights_sha256"]) == 64 for m in report["models"])


def test_second_build_uses_cache_and_bad_image_fails_alone(tiny_gallery):
    images = tiny_gallery.parent / "images"
    assert build(tiny_gallery, "--no-site").returncode == 0
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    proc = build(tiny_gallery, "--no-site")
    assert proc.returncode == 1
    assert "broken.png" in proc.stdout and "1 FAILURE" in proc.stdout
    jobs = expected_jobs(tiny_gallery)
    assert summary(jobs, cached=len(jobs)) in proc.stdout
    report = json.loads((load_config(tiny_gallery).output / "run_report.json").read_text())
    assert [f["image"] for f in report["failures"]] == ["broken.png"]


def test_failing_model_does_not_stop_the_others(tiny_gallery):
    text = tiny_gallery.read_text().replace('weights = "random:1"', 'weights = "hub"', 1)
    text = text.replace('arch = "swin_fmnist_patch2_28"', 'arch = "swin_tiny_patch4_window7_224"')
    tiny_gallery.write_text(text)
    proc = build(tiny_gallery, "--no-site")
    assert proc.returncode == 1
    assert "Tiny Swin" in proc.stdout and "file:" in proc.stdout
    # the ViT's jobs all ran, on both images
    assert summary(of_model(expected_jobs(tiny_gallery), "Tiny ViT"), cached=0) in proc.stdout


def test_probe_chapter_with_a_missing_dataset(tmp_path):
    from .test_finetune import colour_tree

    images = tmp_path / "images"
    write_synthetic_images(images, count=1)
    colour_tree(tmp_path / "colours", per_class=10)
    extra = ('[sections.heads]\nenabled = false\n[sections.rollout]\nenabled = false\n[sections.swin]\nenabled = false\n'

             '[sections.probe]\nepochs = 2\ndatasets = { colours = "colours", eurosat = "missing/EuroSAT" }\n')
    from .conftest import tiny_config_text

    config = tmp_path / "g.toml"
    config.write_text(tiny_config_text(images, tmp_path, extra))
    proc = build(config)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # a dataset that is not there is skipped, not failed …
    assert "2 jobs skipped" in proc.stdout and "no failures" in proc.stdout
    assert "eurosat" in proc.stdout and "github.com/phelber/EuroSAT" in proc.stdout
    cfg = load_config(config)
    page = (cfg.output / "docs" / "chapters" / "fine-tuning.md").read_text()
    assert "| Tiny ViT" in page and "missing" in page  # … and the rest of the table is there
    for model in ("tiny-vit", "tiny-swin"):
        for ext in ("png", "pdf", "csv", "json"):
            assert (cfg.site_dir / "figures" / "probe" / model / f"colours.{ext}").is_file()
    report = json.loads((cfg.output / "run_report.json").read_text())
    assert report["failures"] == [] and [(s["model"], s["unit"]) for s in report["skipped"]] == [
        ("Tiny ViT", "eurosat"), ("Tiny Swin", "eurosat")]
    assert "github.com/phelber/EuroSAT" in (cfg.output / "docs" / "index.md").read_text()
    strict = build(config, "--no-site", "--strict")  # --strict: the skip is a failure (exit 1)
    assert strict.returncode == 1 and "2 jobs skipped" in strict.stdout


def test_faithfulness_section_and_chapter(tmp_path):
    images = tmp_path / "images"
    write_synthetic_images(images, count=1, size=28)
    extra = ('[sections.heads]\nenabled = false\n[sections.rollout]\nenabled = false\n[sections.swin]\nenabled = false\n'
             '[sections.faithfulness]\ngrid = 7\nstep = 7\nrandom_seeds = [0, 1]\n[methods.lime]\nnum_samples = 30\n')
    from .conftest import tiny_config_text

    config = tmp_path / "g.toml"
    config.write_text(tiny_config_text(images, tmp_path, extra))
    proc = build(config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = load_config(config)
    chapter = (cfg.output / "docs" / "chapters" / "faithfulness.md").read_text()
    assert "Ranking per model" in chapter and "Insertion − deletion" in chapter
    data = json.loads((cfg.output / "docs" / "figures" / "faithfulness" / "tiny-vit" / "synthetic-0.json").read_text())
    from generator.relevance import map_specs

    def registered(family: str) -> list[str]:  # every enabled map of the registry for the family, in order
        return [spec.title for spec in map_specs(cfg) if family in spec.method.families]

    methods = [row["method"] for row in data]
    assert methods == registered("vit")
    assert {"rollout (mean)", "rollout (max)", "rollout (min)", "gradient rollout", "last-block CLS attention",
            "LIME"} <= set(methods)
    swin = json.loads((cfg.output / "docs" / "figures" / "faithfulness" / "tiny-swin" / "synthetic-0.json").read_text())
    assert [row["method"] for row in swin] == registered("swin")
    assert {"Swin rollout", "last-stage window attention", "LIME"} <= {row["method"] for row in swin}
    assert all(0.0 <= row["deletion_auc"] <= 1.0 and 0.0 <= row["insertion_auc"] <= 1.0 for row in data + swin)


def test_figures_export_at_a_chosen_dpi(tiny_gallery, tmp_path):
    from PIL import Image

    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "generator", "figures", "--config", str(tiny_gallery), "--dpi", "72",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    png = out / "figures" / "heads" / "tiny-vit" / "synthetic-0.png"
    assert png.is_file() and (out / "figures" / "heads" / "tiny-vit" / "synthetic-0.pdf").is_file()
    dpi = Image.open(png).info.get("dpi")
    assert dpi and round(dpi[0]) == 72


def test_section_subcommand_runs_only_that_section(tiny_gallery):
    proc = subprocess.run([sys.executable, "-m", "generator", "heads", "--config", str(tiny_gallery), "--quiet",
                           "--no-site"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = load_config(tiny_gallery)
    report = json.loads((cfg.output / "run_report.json").read_text())
    jobs = expected_jobs(tiny_gallery, only="heads")
    assert jobs == of_section(expected_jobs(tiny_gallery), "heads") and jobs
    assert written_jobs(cfg.output / "docs") == jobs
    assert set(report["section_seconds"]) == {"heads"} and report["jobs"]["total"] == len(jobs)


def test_manifest_holds_real_versions_and_hashes(tiny_gallery):
    from importlib.metadata import version

    assert build(tiny_gallery, "--no-site").returncode == 0
    cfg = load_config(tiny_gallery)
    page = (cfg.output / "docs" / "reproducibility.md").read_text()
    report = json.loads((cfg.output / "run_report.json").read_text())
    for package in ("torch", "timm", "lime", "mkdocs-material"):
        assert f"| {md_cell(package)} | {md_cell(version(package))} |" in page, package
    assert [m["name"] for m in report["models"]] == [m.name for m in cfg.models]
    for model in report["models"]:
        assert model["weights_sha256"] in page
    assert sorted(i["slug"] for i in report["images"]) == ["synthetic-0", "synthetic-1"]
    for image in report["images"]:
        assert image["sha256"] in page
    assert "vit-gallery build" in page and "random:0" in page  # the command and the config text
