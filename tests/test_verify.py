"""`vit-gallery verify`: a clean gallery verifies; each kind of tampering is caught and named.

One tiny gallery (one model with file weights, one 28-pixel image, three cheap sections) is
built once; every tampering case works on a copy of its output folder and site.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generator.site.manifest import MANIFEST
from generator.verify import VerifyError, compare_numbers, largest_difference, verify

from .conftest import ROOT, write_synthetic_images

WEIGHTS = ROOT / "generator" / "models" / "weights" / "vit_fmnist_patch4_28.safetensors"


def _config_text(root: Path, weights: Path) -> str:
    return f"""
title = "Verify gallery"
images = "{root / 'images'}"
output = "{root / 'build'}"
site_dir = "{root / 'site'}"

[[models]]
name = "ViT"
arch = "vit_fmnist_patch4_28"
weights = "file:{weights}"

[sections.lime]
num_samples = 40
segmentation = "slic"
segmentation_params = {{ n_segments = 8 }}
[sections.rollout]
gradient = false
[sections.perturb]
enabled = false
[sections.maps]
enabled = false
[sections.stats]
enabled = false
[sections.explorer]
enabled = false
[sections.probe]
enabled = false
[sections.faithfulness]
enabled = false
"""


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    """The built tiny gallery's root (``build/``, ``site/``, ``gallery.toml``, ``weights/``)."""
    root = tmp_path_factory.mktemp("verify")
    write_synthetic_images(root / "images", count=1, size=28)
    (root / "weights").mkdir()
    shutil.copy(WEIGHTS, root / "weights" / "vit.safetensors")
    (root / "gallery.toml").write_text(_config_text(root, root / "weights" / "vit.safetensors"), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "generator", "build", "--config", str(root / "gallery.toml"),
                           "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


@pytest.fixture
def copy(gallery, tmp_path) -> Path:
    """A copy of the gallery (output folder, site, config, weights) that a test may tamper with."""
    target = tmp_path / "copy"
    shutil.copytree(gallery, target, ignore=shutil.ignore_patterns("cache"))
    text = (gallery / "gallery.toml").read_text(encoding="utf-8").replace(str(gallery), str(target))
    (target / "gallery.toml").write_text(text, encoding="utf-8")
    return target


def _verify(root: Path, **kwargs):
    return verify(root / "build", config_path=root / "gallery.toml", site=root / "site", **kwargs)


def test_manifest_lists_every_published_file(gallery):
    manifest = json.loads((gallery / "build" / MANIFEST).read_text(encoding="utf-8"))
    assert (gallery / "site" / MANIFEST).read_bytes() == (gallery / "build" / MANIFEST).read_bytes()
    docs = {p.relative_to(gallery / "build" / "docs").as_posix() for p in (gallery / "build" / "docs").rglob("*")
            if p.is_file()}
    assert set(manifest["docs"]) == docs
    assert any(p.startswith("data/heads/") for p in manifest["docs"])
    assert "index.html" in manifest["site"] and "figure-list.html" in manifest["site"]
    assert not any(p.startswith("downloads/") for p in manifest["site"])  # no second copy of the figures
    # the figure list shows small thumbnails, not every full-size figure
    from PIL import Image

    thumbs = sorted((gallery / "build" / "docs" / "thumbnails").rglob("*.png"))
    listing = (gallery / "build" / "docs" / "figure-list.md").read_text(encoding="utf-8")
    assert thumbs and all(Image.open(t).width <= 120 for t in thumbs)
    assert all(f'src="{t.relative_to(gallery / "build" / "docs").as_posix()}"' in listing for t in thumbs)


def test_a_clean_gallery_verifies_every_result(copy):
    result = verify(copy / "build", site=copy / "site", sample=None)  # the config the manifest records
    assert result.ok, list(result.file_problems) + [c for s in result.sections for c in s.checks if not c.matches]
    assert result.exact and not result.drift
    assert {s.section for s in result.sections} >= {"heads", "rollout", "lime"}
    assert all(s.checked == s.matching > 0 and s.largest.largest == 0.0 for s in result.sections)
    assert result.files_checked > 20


def test_the_cli_prints_the_check_and_exits_by_it(gallery, copy):
    proc = subprocess.run([sys.executable, "-m", "generator", "verify", str(gallery / "build"), "--sample", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified: everything matches" in proc.stdout and f"site: {gallery / 'site'}" in proc.stdout
    (copy / "build" / "docs" / "index.md").write_text("# edited\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "generator", "verify", str(copy / "build"), "--sample", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "DIFFERS    docs/index.md" in proc.stdout, proc.stdout + proc.stderr


def test_a_flipped_byte_in_a_data_file_is_caught_and_named(copy):
    data = sorted((copy / "build" / "docs" / "data" / "heads").rglob("*.json"))[0]
    text = data.read_text(encoding="utf-8")
    value = next(line for line in text.splitlines() if any(c.isdigit() for c in line.split(":")[-1])
                 and "." in line.split(":")[-1])
    digit_at = text.index(value) + len(value) - 2
    while not text[digit_at].isdigit():
        digit_at -= 1
    flipped = text[:digit_at] + str((int(text[digit_at]) + 1) % 10) + text[digit_at + 1:]
    data.write_text(flipped, encoding="utf-8")
    rel = data.relative_to(copy / "build" / "docs").as_posix()
    result = _verify(copy, sample=None)
    assert not result.ok and result.exit_code == 1
    assert [(p.where, p.path, p.problem) for p in result.file_problems] == [("docs", rel, "differs")]
    heads = next(s for s in result.sections if s.section == "heads")
    assert heads.differing == 1 and heads.largest.file == rel and heads.largest.largest > 0
    assert "$.result" in heads.largest.where


def test_a_changed_number_in_a_page_is_caught_and_named(copy):
    page = copy / "site" / "reproducibility.html"
    html = page.read_text(encoding="utf-8")
    number = next(tok for tok in html.split() if tok.rstrip("</td>").replace(".", "", 1).isdigit() and "." in tok)
    page.write_text(html.replace(number, number.replace(".", ".9", 1), 1), encoding="utf-8")
    result = _verify(copy, sample=0)
    assert [(p.where, p.path, p.problem) for p in result.file_problems] == [("site", "reproducibility.html",
                                                                              "differs")]
    assert result.exit_code == 1 and not result.sections


def test_an_edited_figure_is_caught_and_named(copy):
    figure = sorted((copy / "build" / "docs" / "figures").rglob("*.png"))[0]
    data = bytearray(figure.read_bytes())
    data[len(data) // 2] ^= 0x01
    figure.write_bytes(bytes(data))
    result = _verify(copy, sample=0)
    assert [(p.path, p.problem) for p in result.file_problems] == [
        (figure.relative_to(copy / "build" / "docs").as_posix(), "differs")]


def test_a_swapped_weights_file_is_refused_and_named(copy):
    from safetensors.torch import load_file, save_file

    weights = copy / "weights" / "vit.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, weights)
    with pytest.raises(VerifyError) as caught:
        _verify(copy, sample=1)
    assert caught.value.exit_code == 3
    assert "'ViT'" in str(caught.value) and "weights" in str(caught.value)
    drifted = _verify(copy, sample=1, allow_drift=True)  # compared anyway: the numbers move
    assert drifted.drift and not drifted.exact
    assert any(s.differing for s in drifted.sections)


def test_bad_input_is_a_clear_error(tmp_path, copy):
    with pytest.raises(VerifyError, match="not a folder"):
        verify(tmp_path / "nothing")
    (copy / "build" / MANIFEST).unlink()
    with pytest.raises(VerifyError, match="no manifest"):
        verify(copy / "build")
    proc = subprocess.run([sys.executable, "-m", "generator", "verify", str(copy / "build")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no manifest" in proc.stderr and "Traceback" not in proc.stderr
    manifest = copy / "site" / MANIFEST
    manifest.write_text(manifest.read_text(encoding="utf-8").replace('"docs"', '"docs" ', 1), encoding="utf-8")
    edited = json.loads(manifest.read_text(encoding="utf-8"))
    edited["models"]["ViT"] = "0" * 64
    manifest.write_text(json.dumps(edited), encoding="utf-8")
    with pytest.raises(VerifyError, match="changed after the build"):
        verify(copy / "site", config_path=copy / "gallery.toml", sample=0)


def test_numbers_are_compared_structurally():
    assert largest_difference({"a": [1.0, {"b": 2.0}]}, {"a": [1.0, {"b": 2.25}]}) == (0.25, "$.a[1].b")
    assert largest_difference([1, 2], [1, 2, 3]) == (float("inf"), "$[2]")
    assert largest_difference({"x": "cat"}, {"x": "dog"})[0] == float("inf")
    assert dict(compare_numbers([float("nan")], [float("nan")])) == {"$[0]": 0.0}
