"""Shared fixtures: offline, small, seeded."""

from __future__ import annotations

import hashlib
import json  # JSON numbers, booleans and lists of them are TOML values too
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach the network
os.environ.setdefault("MPLBACKEND", "Agg")

import generator.models.embedded  # noqa: E402,F401  (registers the embedded timm models)

ROOT = Path(__file__).resolve().parent.parent


def write_synthetic_images(folder: Path, count: int = 2, size: int = 40, seed: int = 0) -> list[Path]:
    """Seeded synthetic RGB images: a bright square on a noisy background."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        arr = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        y, x = rng.integers(0, size // 2, size=2)
        arr[y : y + size // 2, x : x + size // 2] = 230
        path = folder / f"synthetic {i}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def colour_tree(root: Path, per_class: int = 20, seed: int = 0, classes=COLOURS) -> Path:
    """A class-folder dataset that a linear probe separates: noisy 16×16 patches of one colour a class."""
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(np.array(colour) + rng.integers(-30, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


#: The slowest test files, slowest first. Under pytest-xdist (make test: --dist loadfile) files are handed
#: to the workers in collection order, so these start at once instead of ending the run alone.
SLOW_FILES_FIRST = ("test_bench.py", "test_executors.py", "test_reliability.py", "test_build.py", "test_safety.py",
                    "test_browser.py", "test_study_setup.py", "test_methods.py", "test_hf.py", "test_families_zoo.py")


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


#: The library methods at the smallest work that still runs every code path (their numbers are checked
#: against the libraries in test_methods.py); Score-CAM (one forward per channel) is checked there alone.
CHEAP_METHODS: dict[str, dict] = {
    "lime": {"num_samples": 40},
    "kernel-shap": {"n_samples": 12},
    "integrated-gradients": {"n_steps": 3},
    "smoothgrad": {"nt_samples": 2},
    "occlusion": {"window": [14, 14]},
    "score-cam": {"enabled": False},
}


#: The tiny configs' default tables: the cheap methods, probe and faithfulness off. A table that
#: ``extra`` names replaces its default.
TINY_DEFAULT_TABLES = {
    "[sections.probe]": "enabled = false",
    "[sections.faithfulness]": "enabled = false",
    **{f"[methods.{name}]": "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())
       for name, table in CHEAP_METHODS.items()},
}


def tiny_config_text(images: Path | str, out: Path | str, extra: str = "") -> str:
    """A 2-model (random weights) config; ``images`` and ``out`` may be relative to the config file."""
    defaults = "\n".join(f"{header}\n{body}" for header, body in TINY_DEFAULT_TABLES.items() if header not in extra)
    return f"""
title = "Tiny gallery"
images = "{images}"
output = "{Path(out) / 'build'}"
site_dir = "{Path(out) / 'site'}"

[[models]]
name = "Tiny ViT"
arch = "vit_fmnist_patch4_28"
weights = "random:0"

[[models]]
name = "Tiny Swin"
arch = "swin_fmnist_patch2_28"
weights = "random:1"

[sections.lime]
num_samples = 60
segmentation = "slic"
segmentation_params = {{ n_segments = 12 }}
{extra}
{defaults}
"""


@pytest.fixture
def tiny_gallery(tmp_path: Path) -> Path:
    """A config file for a 2-image, 2-model (random weights) gallery under tmp_path, not built."""
    images = tmp_path / "images"
    write_synthetic_images(images)
    config = tmp_path / "gallery.toml"
    config.write_text(tiny_config_text(images, tmp_path), encoding="utf-8")
    return config


#: Hostile class names for the shared gallery's ViT: markup, an ampersand, a slash.
HOSTILE_LABELS = [f"<b>x&y</b> {i}" for i in range(10)]
HOSTILE_IMAGE = "<b>x&y<|b>.png"  # '/' cannot be in a POSIX file name

#: Every section on (tokens, off by default, turned on), each at its smallest: faithfulness on a 4×4 grid, the
#: probe on a 3-class folder of 8 images a class and on a dataset that is not there (its jobs are skipped, with
#: where to get it).
SHARED_EXTRA = """
[sections.faithfulness]
grid = 4
step = 4
random_seeds = [0]
randomise_blocks = 1
road_percentiles = [50]

[sections.probe]
epochs = 2
data_root = "data"
datasets = { colours = "colours", eurosat = "missing/EuroSAT" }

[sections.stats]
bootstrap_samples = 200

[sections.tokens]
enabled = true
map_blocks = 2
"""


def write_shared_gallery(root: Path) -> Path:
    """The shared tiny gallery's inputs under ``root`` (paths in the config are relative to it):
    two synthetic images, one with a hostile name, variants for one, a labels.csv, hostile class names."""
    images = root / "images"
    write_synthetic_images(images)
    Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(images / HOSTILE_IMAGE)
    (images / "labels.csv").write_text("file,label\nsynthetic 0.png,class 3\n", encoding="utf-8")
    (images / "synthetic 0.png.variants.toml").write_text(
        '[[variant]]\nname = "Moved"\nedit = [{ op = "move", box = [0, 0, 20, 20], to = [20, 20] }]\n',
        encoding="utf-8")
    colour_tree(root / "data" / "colours", per_class=8)
    labels = ", ".join(f'"{name}"' for name in HOSTILE_LABELS)
    text = tiny_config_text("images", ".", SHARED_EXTRA).replace(
        'weights = "random:0"', f'weights = "random:0"\nlabels = [{labels}]', 1)
    config = root / "gallery.toml"
    config.write_text(text, encoding="utf-8")
    return config


@dataclass(frozen=True)
class BuiltGallery:
    """A gallery built through the CLI (site included): its config and what the build printed."""

    config: Path
    stdout: str

    @property
    def root(self) -> Path:
        return self.config.parent


@pytest.fixture(scope="session")
def built_gallery(tmp_path_factory, worker_id) -> Iterator[BuiltGallery]:
    """The shared tiny gallery, built once per test session with every section on (under pytest-xdist,
    by the first worker that needs it, while the others wait on a file lock). Read it, never change it:
    tests that change a gallery take ``gallery_copy``."""
    from filelock import FileLock

    # every xdist worker's basetemp lies in one folder of the session; without xdist, this run's own
    base = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    root = base / "shared-gallery"
    with FileLock(str(base / "shared-gallery.lock")):
        done = root / "built.json"
        if not done.is_file():
            _build_shared_gallery(root)
        stdout = json.loads(done.read_text(encoding="utf-8"))["stdout"]
    before = _tree_digest(root)
    yield BuiltGallery(root / "gallery.toml", stdout)
    assert _tree_digest(root) == before, "a test changed the shared gallery: take gallery_copy to change one"


def _build_shared_gallery(root: Path) -> None:
    reuse = os.environ.get("VIT_GALLERY_SHARED_GALLERY")  # while working on tests: a root this fixture built
    if reuse:
        shutil.copytree(reuse, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("built.json"))
        config = root / "gallery.toml"
    else:
        root.mkdir(parents=True, exist_ok=True)
        config = write_shared_gallery(root)
    proc = subprocess.run([sys.executable, "-m", "generator", "build", "--config", str(config), "--quiet"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (root / "built.json").write_text(json.dumps({"stdout": proc.stdout}), encoding="utf-8")


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def gallery_copy(built_gallery: BuiltGallery, tmp_path: Path) -> Path:
    """A private, writable copy of the shared gallery (inputs, cache, figures, pages, site); its config.
    Rebuilt with nothing changed, it recomputes and redraws nothing."""
    root = tmp_path / "gallery"
    shutil.copytree(built_gallery.root, root, symlinks=True)
    return root / "gallery.toml"
