"""Bad images, cache integrity, resume after SIGKILL, determinism, path safety, no network."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generator.store.cache import Record, ResultCache
from generator.config.loading import load_config
from generator.data.images import scan_images, unique_slugs
from generator.config.settings import RunConfig

from .conftest import tiny_config_text, write_synthetic_images
from .expected import SECTION_MODELS, expected_jobs, of_section, summary, written_jobs


def write_bad_and_odd_images(folder: Path) -> dict[str, str]:
    """Every odd mode (must load) and every broken kind (must fail once, clearly). name → expectation."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    base.convert("L").save(folder / "grey.png")
    base.convert("RGBA").save(folder / "rgba.png")
    base.convert("LA").save(folder / "la.png")
    base.convert("P").save(folder / "palette.png")
    base.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65535, (24, 32))).astype(np.uint16)).save(folder / "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    base.save(folder / "rotated.jpg", exif=exif)
    frames = [Image.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image")
    buffer = io.BytesIO()
    base.save(buffer, format="PNG")
    (folder / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    Image.new("L", (9000, 9000)).save(folder / "bomb.png")  # 81 MP > Pillow's 2× guard at this setting
    return {"grey.png": "ok", "rgba.png": "ok", "la.png": "ok", "palette.png": "ok", "cmyk.jpg": "ok",
            "sixteen.png": "ok", "rotated.jpg": "ok", "anim.gif": "ok", "empty.png": "empty file",
            "text.jpg": "not an image", "truncated.png": "truncated or corrupt", "bomb.png": "decompression bomb"}


def test_bad_and_odd_images(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000_000)  # keep the bomb small on disk
    expected = write_bad_and_odd_images(tmp_path)
    items, failures = scan_images(tmp_path)
    loaded = {i.name: i for i in items}
    failed = {f.path.name: f.reason for f in failures}
    for name, expectation in expected.items():
        if expectation == "ok":
            assert name in loaded, (name, failed.get(name))
            assert loaded[name].rgb.dtype == np.uint8 and loaded[name].rgb.shape[2] == 3
        else:
            assert expectation in failed[name], (name, failed.get(name))
    assert sorted(f.path.name for f in failures) == sorted(n for n, e in expected.items() if e != "ok")  # each once
    assert loaded["rotated.jpg"].rgb.shape[:2] == (32, 24)  # EXIF rotation applied
    assert any("EXIF" in n for n in loaded["rotated.jpg"].notes)
    assert any("first frame" in n for n in loaded["anim.gif"].notes)
    assert loaded["anim.gif"].rgb[0, 0, 0] == 10
    assert loaded["sixteen.png"].rgb.max() > 200  # scaled from 16 bits, not clipped


def test_slugs_are_safe_stable_and_unique():
    names = ["Cat.png", "cat.png", "my photo (1).JPG", "ünïcødé.png", "<b>x&y<|b>.png", "....png", "a/../b.png"]
    slugs = unique_slugs(names)
    assert len(set(slugs.values())) == len(names)
    for slug in slugs.values():
        assert slug and all(c.isascii() and (c.isalnum() or c == "-") for c in slug)
    assert unique_slugs(list(reversed(names))) == slugs  # order does not matter
    assert slugs["my photo (1).JPG"] == "my-photo-1"


def test_corrupt_cache_entry_is_discarded_and_recomputed(tmp_path):
    cache = ResultCache(tmp_path)
    record = Record("s", "m", "i", {"a": np.arange(5)}, {"x": 1})
    cache.put("ab" * 32, record)
    assert cache.get("ab" * 32).meta == {"x": 1}
    entry = tmp_path / "ab" / ("ab" * 32)
    (entry / "arrays.npz").write_bytes(b"garbage")
    assert cache.get("ab" * 32) is None
    assert not entry.exists() and cache.discarded == 1
    cache.put("cd" * 32, record)
    (tmp_path / "cd" / ("cd" * 32) / "ok").unlink()  # a write killed before its stamp
    assert cache.get("cd" * 32) is None


def build(config: Path, *args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "generator", "build", "--config", str(config), "--quiet", "--no-site",
                           *args], capture_output=True, text=True, timeout=900, **kwargs)


def data_outputs(config: Path, sections: set[str] | None = None) -> dict[str, bytes]:
    docs = load_config(config).output / "docs" / "data"
    return {p.relative_to(docs).as_posix(): p.read_bytes() for p in sorted(docs.rglob("*.json"))
            if sections is None or p.relative_to(docs).parts[0] in sections}


#: The shared gallery's costly sections, off where a test recomputes from nothing.
COSTLY = ("maps", "faithfulness", "probe")


def disable_sections(config: Path, names) -> None:
    """Turn sections off in ``config``, in their own table where it has one."""
    text = config.read_text()
    for name in names:
        header = f"[sections.{name}]\n"
        text = text.replace(f"{header}enabled = true\n", header)  # a section that is off by default, turned on
        text = text.replace(header, f"{header}enabled = false\n") if header in text else f"{text}\n{header}enabled = false\n"
    config.write_text(text)


def without_costly_sections(config: Path) -> set[str]:
    """Turn the costly sections off in ``config`` (a copy of the shared gallery) and drop its outputs,
    so that it is built from nothing; return the sections that stay on."""
    disable_sections(config, COSTLY)
    for folder in ("build", "site"):
        shutil.rmtree(config.parent / folder)
    return {job[0] for job in expected_jobs(config)}


def test_kill_and_resume_gives_identical_outputs(built_gallery, gallery_copy):
    """A build killed mid-run and resumed writes the same data, byte for byte, as the shared gallery's
    uninterrupted build."""
    sections = without_costly_sections(gallery_copy)
    jobs = expected_jobs(gallery_copy)
    expected = data_outputs(built_gallery.config, sections)
    assert len(expected) == len(jobs)  # one data file per job
    cache_root = load_config(gallery_copy).output / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "generator", "build", "--config", str(gallery_copy), "--quiet",
                             "--no-site"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(cache_root.rglob("ok"))) < 4:  # mid-run: a few results done
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # finished jobs: stamped entries that are job results (relevance maps are stored by content too)
    done_before = sum(json.loads((ok.parent / "meta.json").read_text())["section"] != "relevance"
                      for ok in cache_root.rglob("ok"))
    assert 0 < done_before < len(jobs), "the kill should land mid-run"
    resumed = build(gallery_copy)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert written_jobs(load_config(gallery_copy).output / "docs") == jobs
    assert data_outputs(gallery_copy) == expected
    assert summary(jobs, cached=done_before) in resumed.stdout  # every result stamped before the kill is reused


def test_determinism_and_cache_hits(built_gallery, gallery_copy):
    jobs = expected_jobs(gallery_copy)
    again = build(gallery_copy)
    assert again.returncode == 0 and summary(jobs, cached=len(jobs)) in again.stdout
    # changing one parameter recomputes only the section that depends on it
    gallery_copy.write_text(gallery_copy.read_text() + "\n[sections.heads]\nscale = \"panel\"\n")
    changed = build(gallery_copy)
    assert of_section(jobs, "heads")
    assert summary(jobs, cached=len(jobs) - len(of_section(jobs, "heads"))) in changed.stdout
    # --no-cache computes everything again and writes the same data (heads and swin: the cheap ones)
    gallery_copy.write_text(gallery_copy.read_text().replace('scale = "panel"', 'scale = "row"'))
    disable_sections(gallery_copy, [name for name in SECTION_MODELS if name not in ("heads", "swin")])
    for name in ("heads", "swin"):
        shutil.rmtree(load_config(gallery_copy).output / "docs" / "data" / name)
    fresh = build(gallery_copy, "--no-cache")
    small = {job for job in jobs if job[0] in ("heads", "swin")}
    assert fresh.returncode == 0 and summary(small, cached=0) in fresh.stdout
    assert data_outputs(gallery_copy, {"heads", "swin"}) == data_outputs(built_gallery.config, {"heads", "swin"})


def test_outputs_cannot_escape_the_output_folder(tmp_path):
    from generator.pipeline.outputs import figure_stem
    from generator.store.safepaths import ensure_inside

    docs = tmp_path / "docs"
    docs.mkdir()
    with pytest.raises(ValueError, match="leave the output folder"):
        figure_stem(docs, "heads", "", "..", "..")
    with pytest.raises(ValueError, match="leave the output folder"):
        ensure_inside(docs, docs / ".." / "x.md")
    with pytest.raises(ValueError, match="leave the output folder"):
        ensure_inside(docs, Path("/etc/passwd"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (docs / "figures").symlink_to(outside)
    with pytest.raises(ValueError, match="leave the output folder"):
        figure_stem(docs, "heads", "", "model", "image")
    # an image named like a path gets the slug of its file name's stem: no separators, no dots
    assert unique_slugs(["../../etc/passwd"])["../../etc/passwd"] == "passwd"


def test_symlinked_images_are_not_followed(tmp_path):
    write_synthetic_images(tmp_path / "elsewhere", count=1)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "link.png").symlink_to(tmp_path / "elsewhere" / "synthetic 0.png")
    items, failures = scan_images(tmp_path / "images")
    assert items == []
    assert [(f.path.name, "symlink" in f.reason) for f in failures] == [("link.png", True)]


def test_build_with_local_models_makes_no_network_call(tiny_gallery, monkeypatch):
    from generator.pipeline.runner import run

    disable_sections(tiny_gallery, ["lime", "maps", "explorer", "stats", "perturb", "rollout"])
    attempts = []
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError("network disabled in this test")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    result = run(load_config(tiny_gallery), progress=False, log=lambda m: None)
    assert result.ok
    assert sorted((r.section, r.model, r.image) for r in result.results) == sorted(expected_jobs(tiny_gallery))
    assert {r.model for r in result.results} == {"Tiny ViT", "Tiny Swin"}  # both models were loaded
    assert attempts == []


def test_fail_fast_stops_at_first_failure(gallery_copy):
    (gallery_copy.parent / "images" / "a-broken.png").write_bytes(b"nope")
    proc = build(gallery_copy, "--fail-fast")
    assert proc.returncode == 1
    assert "stopped at the first failure" in proc.stderr


def test_jobs_setting_does_not_change_outputs(built_gallery, gallery_copy):
    """The shared gallery drew its figures in this process (--jobs 1); the copy draws them again in two
    (the sections with the most kinds of figure; the others draw through the same code)."""
    kept = {"heads", "rollout", "swin", "lime", "perturb"}
    disable_sections(gallery_copy, [name for name in SECTION_MODELS if name not in kept])
    shutil.rmtree(load_config(gallery_copy).output / "docs" / "figures")
    proc = build(gallery_copy, "--jobs", "2", "--no-site")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def outputs(config):
        docs = load_config(config).output / "docs"
        return {p.relative_to(docs).as_posix(): p.read_bytes() for p in sorted(docs.rglob("*"))
                if p.is_file() and p.suffix in {".json", ".csv", ".png", ".pdf"}
                and p.relative_to(docs).parts[0] in ("figures", "data")
                and p.relative_to(docs).parts[1].split("-")[0] in kept}

    a, b = outputs(built_gallery.config), outputs(gallery_copy)
    jobs = {job for job in expected_jobs(built_gallery.config) if job[0] in kept}
    report = json.loads((load_config(gallery_copy).output / "run_report.json").read_text())
    slug = {m["name"]: m["slug"] for m in report["models"]}
    for section, model, image in jobs:  # each job drew its figures: figures/<section>[-<id>]/<model>/<image>.png
        assert any(re.fullmatch(rf"figures/{section}(-[^/]+)?/{slug[model]}/{image}\.png", k) for k in b) or \
            f"{section}/{slug[model]}/{image}/manifest.json" in b, (section, model, image)  # the explorer's files
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_run_report_lists_each_bad_file_once(tmp_path, monkeypatch):
    images = tmp_path / "images"
    expected = write_bad_and_odd_images(images)
    Image.new("RGB", (5, 4), (200, 10, 10)).save(images / "tiny.png")
    extra = "".join(f"[sections.{name}]\nenabled = false\n" for name in ("rollout", "swin", "perturb", "maps", "explorer"))
    config = tmp_path / "c.toml"
    text = tiny_config_text(images, tmp_path, extra).replace("[sections.lime]\n", "[sections.lime]\nenabled = false\n")
    config.write_text(text)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # Pillow's bomb guard is set to 20 MP inside the build by this environment variable hook
    proc = build(config, env={**env, "VIT_GALLERY_MAX_IMAGE_PIXELS": "20000000"})
    assert proc.returncode == 1
    report = json.loads((load_config(config).output / "run_report.json").read_text())
    failed = [f["image"] for f in report["failures"]]
    bad = sorted(name for name, what in expected.items() if what != "ok")
    assert sorted(failed) == bad  # each exactly once, nothing else
    good = {i["file"]: i for i in report["images"]}
    assert set(good) == {n for n, w in expected.items() if w == "ok"} | {"tiny.png"}
    assert any("upscaled" in note for note in good["tiny.png"]["notes"])
    page = (load_config(config).output / "docs" / "run-report.md").read_text()
    # the failures table: | stage | section | model | image | error |, one row per bad file
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in page.splitlines()
            if line.startswith("| image |")]
    assert sorted(row[3] for row in rows) == bad


def test_unreadable_figure_stamp_means_draw_again(gallery_copy):
    cache_root = load_config(gallery_copy).output / "cache"
    stamps = sorted(cache_root.rglob(f"figures-r*-{RunConfig().dpi}-*.ok"))
    assert stamps
    stamps[0].write_text("{ not json")
    again = build(gallery_copy)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "no failures" in again.stdout
    json.loads(stamps[0].read_text())  # the figures were drawn again and the stamp written anew


def _tiny_all_sections(tmp_path: Path) -> Path:
    """A 1-image tiny gallery with every section on (faithfulness small, tokens turned on)."""
    images = tmp_path / "images"
    write_synthetic_images(images, count=1, size=28)
    config = tmp_path / "gallery.toml"
    config.write_text(tiny_config_text(images, tmp_path, extra=(
        "[sections.faithfulness]\ngrid = 4\nstep = 4\nrandom_seeds = [0]\nrandomise_blocks = 0\n"
        "[sections.tokens]\nenabled = true\n"
        "[methods.lime]\nenabled = false\n")), encoding="utf-8")
    return config


def test_every_chapter_is_written_when_every_job_of_it_failed(tmp_path, monkeypatch):
    """Each section's templates meet a run in which all of its jobs failed: every chapter is still
    written, the build does not abort, and only the job failures are reported."""
    from generator.builder import build as build_gallery
    from generator.config.loading import load_config
    from generator.sections import SECTIONS

    def broken(*args, **kwargs):
        raise RuntimeError("planted failure")

    for cls in SECTIONS:
        monkeypatch.setattr(cls, "compute", broken)
        monkeypatch.setattr(cls, "compute_unit", broken)
    config = load_config(_tiny_all_sections(tmp_path))
    outcome = build_gallery(config, site=False)
    failures = outcome.run.failures
    assert failures and all(f.stage == "section" and "planted failure" in f.error for f in failures), \
        [(f.stage, f.error) for f in failures if "planted failure" not in f.error]
    docs = outcome.run.docs_dir
    for cls in SECTIONS:
        section = cls(config)
        if section.enabled():
            page = docs / "chapters" / f"{section.chapter[0]}.md"
            assert page.is_file(), page
            assert "could not be rendered" not in page.read_text(encoding="utf-8"), page


def test_a_page_that_cannot_render_is_reported_and_the_rest_is_kept(gallery_copy, monkeypatch):
    from generator.builder import build as build_gallery
    from generator.sections.heads import HeadsSection
    from generator.sections.rollout import RolloutSection

    def broken_extras(self, results):
        raise KeyError("planted <b>template</b> failure")

    def broken_page_extras(self, results):
        raise ValueError("planted page-extras failure")

    monkeypatch.setattr(HeadsSection, "chapter_extras", broken_extras)
    monkeypatch.setattr(RolloutSection, "page_extras", broken_page_extras)
    config = load_config(gallery_copy)
    outcome = build_gallery(config, site=False)
    page_failures = [f for f in outcome.run.failures if f.stage == "page"]
    images = [i.slug for i in outcome.run.images]
    # the heads chapter once; the rollout block once per image page (the rollout chapter needs page_extras too)
    assert sorted((f.section, f.image or "") for f in page_failures) == sorted(
        [("heads", ""), ("rollout", "")] + [("rollout", slug) for slug in images]), page_failures
    assert any("planted <b>template</b> failure" in f.error for f in page_failures)
    docs = outcome.run.docs_dir
    heads_chapter = (docs / "chapters" / f"{HeadsSection(config).chapter[0]}.md").read_text(encoding="utf-8")
    assert "could not be rendered" in heads_chapter and "<b>" not in heads_chapter  # escaped
    for slug in images:  # the image pages keep every other block and lose the rollout block alone
        image_page = (docs / "images" / f"{slug}.md").read_text(encoding="utf-8")
        assert f"figures/heads/tiny-vit/{slug}.png" in image_page
        assert f"figures/lime/tiny-swin/{slug}.png" in image_page
        assert f"figures/rollout/tiny-vit/{slug}.png" not in image_page
    report = json.loads((config.output / "run_report.json").read_text(encoding="utf-8"))
    assert sum(f["stage"] == "page" for f in report["failures"]) == len(page_failures)
    assert outcome.exit_code == 1
    run_report_page = (docs / "run-report.md").read_text(encoding="utf-8")
    assert "planted page" in run_report_page


FRONT_PAGES = {"index.md.j2": "index.md", "chapters/claims.md.j2": "chapters/claims.md",
               "reproducibility.md.j2": "reproducibility.md", "figure-list.md.j2": "figure-list.md",
               "run-report.md.j2": "run-report.md"}


def test_front_pages_that_cannot_render_are_reported_and_the_rest_is_kept(gallery_copy, tmp_path, monkeypatch):
    """Each of the front pages' templates fails: each is a page failure of its own, says so, and every
    other page (the other front pages, the chapters, the image pages) is still written."""
    import generator.site.resources
    from generator.builder import build as build_gallery

    templates = tmp_path / "templates"
    shutil.copytree(generator.site.resources.templates_dir(), templates)
    for template in FRONT_PAGES:
        (templates / template).write_text("# Planted\n\n{{ planted_undefined_value.field }}\n", encoding="utf-8")
    monkeypatch.setattr(generator.site.resources, "templates_dir", lambda: templates)
    config = load_config(gallery_copy)
    outcome = build_gallery(config, site=False)
    docs = outcome.run.docs_dir
    failed = sorted(f.error.split(":")[0] for f in outcome.run.failures if f.stage == "page")
    assert failed == sorted(FRONT_PAGES.values())
    for target in FRONT_PAGES.values():
        text = (docs / target).read_text(encoding="utf-8")
        assert "could not be rendered" in text and "UndefinedError" in text, target
    for slug in (i.slug for i in outcome.run.images):
        assert "could not be rendered" not in (docs / "images" / f"{slug}.md").read_text(encoding="utf-8")
    assert (docs / "chapters" / "attention.md").is_file() and (docs / "chapters" / "obtaining.md").is_file()
    assert outcome.exit_code == 1
