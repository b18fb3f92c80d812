"""Safety: the tool touches only what it owns, escapes every user string, keeps each image's results
its own, refuses bad values before work starts, and ends faults with a clear message."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from generator.cli import main
from generator.config.loading import ConfigError, load_config
from generator.data.images import scan_images, slugify, unique_slugs
from generator.store.safepaths import MARKER

from .conftest import write_synthetic_images

HEADS_ONLY = """
[sections.rollout]
enabled = false
[sections.swin]
enabled = false
[sections.lime]
enabled = false
[sections.perturb]
enabled = false
[sections.probe]
enabled = false
[sections.faithfulness]
enabled = false
"""


def config_text(images: Path, output: Path, site: Path, *, title: str = "Safe", models: str | None = None,
                sections: str = HEADS_ONLY, extra: str = "") -> str:
    models = models or '[[models]]\nname = "Tiny ViT"\narch = "vit_fmnist_patch4_28"\nweights = "random:0"\n'
    return (f"title = {json.dumps(title)}\nimages = {json.dumps(str(images))}\noutput = {json.dumps(str(output))}\n"
            f"site_dir = {json.dumps(str(site))}\n{extra}\n{models}\n{sections}")


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gallery.toml"
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)


def gallery(tmp_path: Path, count: int = 1, **kwargs) -> Path:
    images = tmp_path / "images"
    write_synthetic_images(images, count=count)
    return write_config(tmp_path, config_text(images, tmp_path / "build", tmp_path / "site", **kwargs))


# ------------------------------------------------------------------ never write outside what the tool owns


def test_site_dir_holding_user_files_is_refused_before_any_work(tmp_path):
    images = tmp_path / "images"
    write_synthetic_images(images)
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    config = write_config(tmp_path, config_text(images, tmp_path / "build", mine))
    result = cli("build", "--config", str(config), "--quiet")
    assert result.exit_code == 2
    assert "site_dir" in result.output and "did not write" in result.output
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "build").exists(), "nothing may be computed before the refusal"


def test_site_dir_at_the_images_folder_is_refused(tmp_path):
    images = tmp_path / "images"
    write_synthetic_images(images)
    config = write_config(tmp_path, config_text(images, tmp_path / "build", images))
    result = cli("build", "--config", str(config), "--quiet")
    assert result.exit_code == 2 and "site_dir" in result.output and "image folder" in result.output
    assert len(list(images.iterdir())) == 2


@pytest.mark.parametrize("where", ["root", "home", "config folder", "images", "images parent", "user folder"])
def test_output_must_be_a_dedicated_folder(tmp_path, where):
    project = tmp_path / "project"
    images = project / "data" / "images"
    write_synthetic_images(images)
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    output = {"root": Path("/"), "home": Path.home(), "config folder": project, "images": images,
              "images parent": images.parent, "user folder": user}[where]
    config = project / "gallery.toml"
    config.write_text(config_text(images, output, tmp_path / "site"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.key == "output"
    assert (user / "keep.txt").read_text() == "mine"


def test_site_dir_may_not_contain_output(tmp_path):
    images = tmp_path / "images"
    write_synthetic_images(images)
    config = write_config(tmp_path, config_text(images, tmp_path / "out" / "build", tmp_path / "out"))
    result = cli("build", "--config", str(config), "--quiet")
    assert result.exit_code == 2 and "site_dir" in result.output and "contains the output folder" in result.output
    assert not (tmp_path / "out").exists()


def test_owned_folders_are_marked_and_reused(tmp_path):
    config = gallery(tmp_path)
    first = cli("build", "--config", str(config), "--quiet")
    assert first.exit_code == 0, first.output
    assert (tmp_path / "build" / MARKER).is_file() and (tmp_path / "site" / MARKER).is_file()
    second = cli("build", "--config", str(config), "--quiet")
    assert second.exit_code == 0, second.output
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / MARKER).is_file()


@pytest.mark.parametrize("key,value", [("mask", "../../outside.png"), ("mask", "/etc/hostname"),
                                       ("source", "../secret.png"), ("source", "/etc/hostname")])
def test_declared_paths_stay_in_their_folder(tmp_path, key, value):
    images = tmp_path / "images"
    write_synthetic_images(images)
    edit = ({"op": "erase", "mask": value} if key == "mask" else
            {"op": "paste", "source": value, "source_region": {"box": [0, 0, 4, 4]}, "to": [0, 0]})
    sections = HEADS_ONLY.replace("[sections.perturb]\nenabled = false\n", "")
    sections += ("[sections.perturb]\n[[sections.perturb.variants.\"synthetic 0.png\"]]\nname = \"v\"\n"
                 f"edit = [{json.dumps(edit).replace(':', ' =').replace('{', '{ ').replace('}', ' }')}]\n")
    config = write_config(tmp_path, config_text(images, tmp_path / "build", tmp_path / "site", sections=sections))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.key == "sections.perturb.variants.synthetic 0.png"
    assert str(config) in str(info.value) and ("absolute" in str(info.value) or "leaves" in str(info.value))


def test_variant_file_next_to_an_image_cannot_reach_outside(tmp_path):
    config = gallery(tmp_path, sections=HEADS_ONLY.replace("[sections.perturb]\nenabled = false\n", ""))
    (tmp_path / "secret.png").write_bytes(b"")
    (tmp_path / "images" / "synthetic 0.png.variants.toml").write_text(
        '[[variant]]\nname = "v"\nedit = [{ op = "erase", mask = "../secret.png" }]\n')
    result = cli("build", "--config", str(config), "--quiet", "--no-site")
    assert result.exit_code == 1
    report = json.loads((tmp_path / "build" / "run_report.json").read_text())
    assert any("leaves its folder" in f["error"] and f["section"] == "perturb" for f in report["failures"])


def test_dataset_paths_stay_inside_data_root(tmp_path):
    images = tmp_path / "images"
    write_synthetic_images(images)
    (tmp_path / "data" / "set").mkdir(parents=True)
    (tmp_path / "other" / "set").mkdir(parents=True)
    probe = '[sections.probe]\ndatasets = { set = "../other/set" }\n'
    sections = HEADS_ONLY.replace("[sections.probe]\nenabled = false\n", probe)
    config = write_config(tmp_path / "data", config_text(images, tmp_path / "build", tmp_path / "site",
                                                          sections=sections))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.key == "sections.probe.datasets.set" and "leaves" in str(info.value)
    config.write_text(config.read_text().replace('"../other/set"', '"set"'))
    assert load_config(config).sections.probe.data_root == (tmp_path / "data").resolve()


# ------------------------------------------------------------------ every user string is escaped

HOSTILE = "<img src=x onerror=window.__xss=1>"


def test_hostile_names_never_reach_the_dom(tmp_path):
    from .test_browser import CHROMIUM, require_chromium

    require_chromium()
    from playwright.sync_api import sync_playwright

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    names = [f"{HOSTILE}.png", "<svg onload=window.__xss=1>.png", "a\"onmouseover=\"window.__xss=1.png"]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(images / name)
    labels = json.dumps([f"<b onclick=window.__xss=1>class {i}</b>" for i in range(10)])
    models = (f'[[models]]\nname = {json.dumps(HOSTILE + " ViT")}\narch = "vit_fmnist_patch4_28"\nweights = "random:0"\n'
              f"labels = {labels}\n"
              f'[[models]]\nname = "<script>window.__xss=1</script> Swin"\narch = "swin_fmnist_patch2_28"\n'
              f'weights = "random:1"\nlabels = {labels}\n')
    sections = HEADS_ONLY.replace("[sections.swin]\nenabled = false\n", "").replace(
        "[sections.perturb]\nenabled = false\n",
        "[sections.perturb]\n[[sections.perturb.variants.\"" + names[0].replace('"', '\\"') + "\"]]\n"
        f"name = {json.dumps(HOSTILE)}\nedit = [{{ op = \"erase\", rbox = [0.0, 0.0, 0.5, 0.5] }}]\n")
    config = write_config(tmp_path, config_text(images, tmp_path / "build", tmp_path / "site",
                                                 title="<script>window.__xss=1</script> gallery",
                                                 models=models, sections=sections))
    result = cli("build", "--config", str(config), "--quiet")
    assert result.exit_code == 0, result.output
    site = tmp_path / "site"
    pages = sorted(p for p in site.rglob("*.html") if "assets" not in p.relative_to(site).parts)
    assert len(pages) >= 8
    found = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        try:
            page = browser.new_page()
            for path in pages:
                page.goto(path.as_uri(), wait_until="load")
                page.mouse.move(10, 10)
                hits = page.evaluate("""() => {
                    const out = [];
                    if (window.__xss) out.push('script ran');
                    for (const el of document.querySelectorAll('*')) {
                        for (const a of el.attributes) {
                            if (a.name.startsWith('on')) out.push(el.tagName + ' ' + a.name);
                        }
                        if (el.tagName === 'SCRIPT' && el.textContent.includes('__xss')) out.push('script element');
                        if (el.tagName === 'B' && el.closest('article')) out.push('injected <b>');
                        if (el.tagName === 'IMG' && el.getAttribute('src') === 'x') out.push('injected img');
                    }
                    return out;
                }""")
                found += [f"{path.relative_to(site)}: {h}" for h in hits]
            # the text itself is shown, escaped, to the reader
            page.goto((site / "index.html").as_uri())
            assert "<script>window.__xss=1</script> gallery" in page.title()
        finally:
            browser.close()
    assert not found, found


# ------------------------------------------------------------------ each image keeps its own results


def test_slugs_are_unique_against_names_that_look_hashed():
    plain = "a b.png"
    hashed_looking = f"a-b-{hashlib.sha256(plain.encode()).hexdigest()[:8]}.png"
    names = [plain, "a_b.png", hashed_looking, "A B.PNG", "x" * 250 + ".png", "x" * 250 + "y.png"]
    slugs = unique_slugs(names)
    assert len(set(slugs.values())) == len(names)
    assert unique_slugs(list(reversed(names))) == slugs
    assert slugs[hashed_looking] == slugify(hashed_looking)


def test_model_name_with_a_slash_keeps_its_whole_name():
    from generator.pipeline.plan import model_slugs
    from generator.config.loading import parse_config

    images = Path(__file__).resolve().parent.parent / "images" / "fashion"
    cfg = parse_config({"title": "t", "images": str(images), "output": "/tmp/vg-slug-out", "site_dir": "/tmp/vg-slug-site",
                        "models": [{"name": "ViT-B/16", "arch": "vit_fmnist_patch4_28", "weights": "random:0"},
                                   {"name": "ViT-B/32", "arch": "vit_fmnist_patch4_28", "weights": "random:0"}]})
    assert model_slugs(cfg) == {"ViT-B/16": "vit-b-16", "ViT-B/32": "vit-b-32"}


def test_identical_images_and_renames_get_their_own_outputs(tmp_path):
    config = gallery(tmp_path, count=1)
    images = tmp_path / "images"
    shutil.copy(images / "synthetic 0.png", images / "twin.png")
    result = cli("build", "--config", str(config), "--quiet", "--no-site")
    assert result.exit_code == 0, result.output
    docs = tmp_path / "build" / "docs"
    for slug in ("synthetic-0", "twin"):
        data = json.loads((docs / "data" / "heads" / "tiny-vit" / f"{slug}.json").read_text())
        assert data["image"] == slug
        assert (docs / "figures" / "heads" / "tiny-vit" / f"{slug}.png").is_file()
        page = (docs / "images" / f"{slug}.md").read_text()
        assert f"figures/heads/tiny-vit/{slug}.png" in page
    (images / "twin.png").rename(images / "renamed.png")
    result = cli("build", "--config", str(config), "--quiet", "--no-site")
    assert result.exit_code == 0, result.output
    assert (docs / "data" / "heads" / "tiny-vit" / "renamed.json").is_file()
    assert "figures/heads/tiny-vit/renamed.png" in (docs / "images" / "renamed.md").read_text()
    assert (docs / "figures" / "heads" / "tiny-vit" / "renamed.png").is_file()


# ------------------------------------------------------------------ bad values are refused before work starts


@pytest.mark.parametrize("section,key,value", [
    ("faithfulness", "blur_sigma", "nan"), ("faithfulness", "blur_sigma", "-1.0"), ("faithfulness", "blur_sigma", "inf"),
    ("faithfulness", "flag_correlation", "nan"), ("probe", "lr", "nan"), ("probe", "lr", "-0.1"),
    ("probe", "weight_decay", "-1e-4"), ("probe", "weight_decay", "nan"), ("rollout", "discard_ratios", "[nan]"),
    ("swin", "rollout_discard_ratio", "inf"), ("lime", "segmentation_params", "{ sigma = nan }"),
])
def test_non_finite_and_negative_values_are_config_errors(tmp_path, section, key, value):
    images = tmp_path / "images"
    write_synthetic_images(images)
    sections = f"[sections.{section}]\n{key} = {value}\n"
    if section == "lime":
        sections = f"[sections.lime]\nsegmentation = \"slic\"\n{key} = {value}\n"
    config = write_config(tmp_path, config_text(images, tmp_path / "build", tmp_path / "site", sections=sections))
    result = cli("build", "--config", str(config), "--quiet")
    assert result.exit_code == 2
    assert f"sections.{section}.{key}" in result.output
    assert not (tmp_path / "build").exists()


def test_labels_that_do_not_fit_the_head_are_an_error(tmp_path):
    weights = Path(__file__).resolve().parent.parent / "generator" / "models" / "weights" / "vit_fmnist_patch4_28.safetensors"
    models = (f'[[models]]\nname = "ViT"\narch = "vit_fmnist_patch4_28"\nweights = "file:{weights}"\n'
              'labels = ["a", "b", "c"]\n')
    config = gallery(tmp_path, models=models)
    result = cli("build", "--config", str(config), "--quiet", "--no-site")
    assert result.exit_code == 1
    report = json.loads((tmp_path / "build" / "run_report.json").read_text())
    (failure,) = report["failures"]
    assert failure["stage"] == "model" and "3 labels given but the head has 10 classes" in failure["error"]


def test_odd_entries_are_reported_and_the_rest_completes(tmp_path):
    images = tmp_path / "images"
    write_synthetic_images(images, count=1)
    long_name = "l" * 246 + ".png"
    shutil.copy(images / "synthetic 0.png", images / long_name)
    raw = os.fsencode(images) + b"/caf\xe9.png"
    shutil.copy(images / "synthetic 0.png", raw)
    (images / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (images / "loop.png").symlink_to(images / "loop.png")
    sections = HEADS_ONLY.replace("[sections.perturb]\nenabled = false\n", "")
    config = write_config(tmp_path, config_text(images, tmp_path / "build", tmp_path / "site", sections=sections))
    result = cli("build", "--config", str(config), "--quiet", "--no-site")
    assert result.exit_code == 1  # the skipped entries are failures of their own
    assert "Traceback" not in result.output
    report = json.loads((tmp_path / "build" / "run_report.json").read_text())
    reasons = {f["image"]: f["error"] for f in report["failures"]}
    assert "symlink loop" in reasons["loop.png"]
    assert "broken symlink" in reasons["broken.png"]
    assert "not valid UTF-8" in reasons["caf\ufffd.png"]
    built = {i["file"] for i in report["images"]}
    assert built == {"synthetic 0.png", long_name}
    docs = tmp_path / "build" / "docs"
    assert len(list((docs / "data" / "heads" / "tiny-vit").glob("*.json"))) == 2


def test_tampered_identity_memo_is_detected_and_rebuilt(tmp_path):
    weights = Path(__file__).resolve().parent.parent / "generator" / "models" / "weights" / "vit_fmnist_patch4_28.safetensors"
    models = f'[[models]]\nname = "ViT"\narch = "vit_fmnist_patch4_28"\nweights = "file:{weights}"\n'
    config = gallery(tmp_path, models=models)
    assert cli("build", "--config", str(config), "--quiet", "--no-site").exit_code == 0
    (memo,) = (tmp_path / "build" / "cache" / "models").glob("*.json")
    envelope = json.loads(memo.read_text())
    envelope["identity"]["class_names"][0] = "tampered"
    memo.write_text(json.dumps(envelope))
    assert cli("build", "--config", str(config), "--quiet", "--no-site").exit_code == 0
    rebuilt = json.loads(memo.read_text())
    assert rebuilt["identity"]["class_names"][0] != "tampered"
    assert hashlib.sha256(json.dumps(rebuilt["identity"], sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest() == rebuilt["sha256"]


# ------------------------------------------------------------------ faults end in a clear message


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def _run_with_fault(tmp_path: Path, kind: str, monkeypatch):
    """Build onto a real full or read-only tmpfs; where mounting is not allowed, inject the same OSError."""
    config = gallery(tmp_path, count=2)
    out = tmp_path / "build"
    mounted = _mount_tmpfs(out, "96k" if kind == "full" else "4m")
    try:
        if mounted and kind == "readonly":
            subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        elif not mounted:
            import generator.store.atomic as atomic

            original, calls = atomic.atomic_write_bytes, []

            def failing(path, data):
                calls.append(path)
                if len(calls) > (3 if kind == "full" else 0):
                    raise OSError(errno.ENOSPC if kind == "full" else errno.EROFS, os.strerror(
                        errno.ENOSPC if kind == "full" else errno.EROFS), str(path))
                return original(path, data)

            monkeypatch.setattr(atomic, "atomic_write_bytes", failing)
        result = CliRunner().invoke(main, ["build", "--config", str(config), "--quiet"])
        leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")] if out.exists() else []
        return result, leftovers
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(out)], capture_output=True)


@pytest.mark.parametrize("kind", ["readonly", "full"])
def test_unwritable_output_ends_with_one_clear_message(tmp_path, kind, monkeypatch):
    result, leftovers = _run_with_fault(tmp_path, kind, monkeypatch)
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    text = result.output
    assert text.count("stopped: ") == 1
    assert ("No space left" in text) if kind == "full" else ("Read-only" in text or "Permission" in text)
    assert not leftovers, leftovers


def test_hub_without_network_fails_fast_without_hf_hub_offline(tmp_path):
    models = '[[models]]\nname = "ViT-B/16"\narch = "vit_base_patch16_224"\nweights = "hub"\n'
    config = gallery(tmp_path, models=models)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # a closed port: the hub cannot be reached
    env["HF_HOME"] = str(tmp_path / "hf-home")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "generator", "build", "--config", str(config), "--quiet", "--no-site"],
                          capture_output=True, text=True, timeout=120, env=env)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 1
    assert "cannot be reached" in proc.stdout + proc.stderr
    assert "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k" in proc.stdout + proc.stderr
    assert elapsed < 10 + 8, f"{elapsed:.1f} s (of which ~5 s is importing torch and timm)"


def test_large_images_are_not_held_in_memory(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    big = np.zeros((2100, 2100, 3), np.uint8)
    big[::7] = 200
    for i in range(2):
        Image.fromarray(big).save(folder / f"big{i}.png", compress_level=1)
    write_synthetic_images(folder, count=1)
    items, failures = scan_images(folder)
    assert not failures
    by_name = {i.name: i for i in items}
    assert by_name["big0.png"].pixels is None and by_name["big1.png"].pixels is None
    assert by_name["synthetic 0.png"].pixels is not None
    assert by_name["big0.png"].shape == (2100, 2100)
    np.testing.assert_array_equal(by_name["big0.png"].rgb, big)
    Image.fromarray(big[:50]).save(folder / "big0.png")
    with pytest.raises(Exception, match="changed on disk"):
        _ = by_name["big0.png"].rgb
