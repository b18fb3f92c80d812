"""Shared fixtures: offline, small, seeded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach the network
os.environ.setdefault("MPLBACKEND", "Agg")

import generator.embedded  # noqa: E402,F401  (registers the embedded timm models)

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


def tiny_config_text(images: Path, out: Path, extra: str = "") -> str:
    return f"""
title = "Tiny gallery"
images = "{images}"
output = "{out / 'build'}"
site_dir = "{out / 'site'}"

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
{'' if '[sections.probe]' in extra else '[sections.probe]' + chr(10) + 'enabled = false'}
{'' if '[sections.faithfulness]' in extra else '[sections.faithfulness]' + chr(10) + 'enabled = false'}
"""


@pytest.fixture
def tiny_gallery(tmp_path: Path) -> Path:
    """A config file for a 2-image, 2-model (random weights) gallery under tmp_path."""
    images = tmp_path / "images"
    write_synthetic_images(images)
    config = tmp_path / "gallery.toml"
    config.write_text(tiny_config_text(images, tmp_path), encoding="utf-8")
    return config
