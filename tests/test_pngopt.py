"""Lossless PNG optimisation: the same pixels, fewer bytes, the same bytes every time."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from generator.render.pngopt import decoded_rgba, optimise_png


def _png(array: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _cases() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    few = rng.integers(0, 5, size=(60, 80)).astype(np.uint8)
    colours = np.array([[255, 255, 255], [31, 119, 180], [255, 127, 14], [0, 0, 0], [44, 160, 44]], np.uint8)
    few_rgba = np.concatenate([colours[few], np.full((60, 80, 1), 255, np.uint8)], axis=2)
    grey = rng.integers(0, 256, size=(50, 50)).astype(np.uint8)
    grey_rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=2)
    many = rng.integers(0, 256, size=(40, 40, 4)).astype(np.uint8)
    many[..., 3] = 255
    alpha = few_rgba.copy()
    alpha[:10, :10, 3] = 0
    alpha[10:20, :10, 3] = 128
    translucent_many = rng.integers(0, 256, size=(30, 30, 4)).astype(np.uint8)
    return {"few colours": _png(few_rgba, "RGBA"), "grey": _png(grey_rgba, "RGBA"), "many colours": _png(many, "RGBA"),
            "few colours with alpha": _png(alpha, "RGBA"), "many colours with alpha": _png(translucent_many, "RGBA")}


@pytest.mark.parametrize("name", list(_cases()))
def test_optimised_png_has_the_same_pixels_and_is_no_larger(name):
    data = _cases()[name]
    small = optimise_png(data)
    assert np.array_equal(decoded_rgba(small), decoded_rgba(data))
    assert len(small) <= len(data)
    assert optimise_png(data) == small  # deterministic


def test_few_colours_become_a_palette_and_shrink():
    data = _cases()["few colours"]
    small = optimise_png(data)
    with Image.open(io.BytesIO(small)) as image:
        assert image.mode == "P"
    assert len(small) < 0.8 * len(data)
    with Image.open(io.BytesIO(optimise_png(_cases()["few colours with alpha"]))) as image:
        assert image.mode == "P" and "transparency" in image.info


def test_a_saved_figure_is_optimised_losslessly(tmp_path):
    from generator.render.style import figure_bytes, new_figure, save_figure

    fig = new_figure(3, 2)
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [1, 0, 2])
    ax.set_title("a line")
    raw = figure_bytes(fig, "png", 100)
    save_figure(fig, tmp_path / "f", 100)
    written = (tmp_path / "f.png").read_bytes()
    assert np.array_equal(decoded_rgba(written), decoded_rgba(raw))
    assert len(written) < len(raw)


def test_the_resolution_is_kept():
    """A figure exported at 300 dpi keeps its physical size (the pHYs chunk) through optimisation."""
    buffer = io.BytesIO()
    Image.new("RGBA", (30, 20), (10, 200, 30, 255)).save(buffer, format="PNG", dpi=(300, 300))
    with Image.open(io.BytesIO(optimise_png(buffer.getvalue()))) as image:
        assert tuple(round(v) for v in image.info["dpi"]) == (300, 300)
