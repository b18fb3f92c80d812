"""Lossless PNG optimisation: the smallest encoding of exactly the same pixels.

Figures come out of matplotlib as 8-bit RGBA. Most are opaque, many are grey, and many have
few colours (line plots, heat maps drawn with a short colour list). :func:`optimise_png`
re-encodes such a PNG in the smallest PNG mode that holds every pixel exactly: a palette
(``P``, with per-entry alpha when needed) when there are at most 256 colours, otherwise grey
(``L``/``LA``) or ``RGB`` when the alpha or colour channels carry nothing, and Pillow's
``optimize=True``. The candidates are decoded again and compared with the original pixels; one
that differs is never used. The output is a pure function of the input bytes (fixed palette
order, fixed encoder settings), so figures stay byte-identical across reruns and ``--jobs``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["optimise_png", "decoded_rgba"]


def decoded_rgba(data: bytes) -> np.ndarray:
    """The pixels of a PNG as an ``(H, W, 4)`` uint8 RGBA array."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return np.asarray(image.convert("RGBA"))


def _palette_image(rgba: np.ndarray, opaque: bool) -> Image.Image | None:
    """``rgba`` as a palette image with entries in sorted colour order, or None above 256 colours."""
    packed = rgba.reshape(-1, 4).copy().view(np.uint32).ravel()
    colours, index = np.unique(packed, return_inverse=True)
    if len(colours) > 256:
        return None
    entries = colours.view(np.uint8).reshape(-1, 4)
    image = Image.fromarray(index.astype(np.uint8).reshape(rgba.shape[:2]), mode="P")
    image.putpalette(entries[:, :3].tobytes(), rawmode="RGB")
    if not opaque:
        image.info["transparency"] = entries[:, 3].tobytes()
    return image


def _candidates(rgba: np.ndarray) -> list[Image.Image]:
    """Images that hold exactly ``rgba``'s pixels, in the order of preference for equal sizes."""
    opaque = bool((rgba[..., 3] == 255).all())
    grey = bool(((rgba[..., 0] == rgba[..., 1]) & (rgba[..., 1] == rgba[..., 2])).all())
    out = []
    palette = _palette_image(rgba, opaque)
    if palette is not None:
        out.append(palette)
    if grey:
        out.append(Image.fromarray(rgba[..., 0].copy(), mode="L") if opaque
                   else Image.fromarray(rgba[..., [0, 3]].copy(), mode="LA"))
    else:
        out.append(Image.fromarray(rgba[..., :3].copy(), mode="RGB") if opaque
                   else Image.fromarray(rgba.copy(), mode="RGBA"))
    return out


def _encode(image: Image.Image, dpi: tuple[float, float] | None) -> bytes:
    buffer = io.BytesIO()
    params = {"transparency": image.info["transparency"]} if "transparency" in image.info else {}
    if dpi is not None:  # the physical size (pHYs): a figure exported at 300 dpi prints at its size
        params["dpi"] = dpi
    image.save(buffer, format="PNG", optimize=True, **params)
    return buffer.getvalue()


def _dpi(data: bytes) -> tuple[float, float] | None:
    with Image.open(io.BytesIO(data)) as image:
        return image.info.get("dpi")


def optimise_png(data: bytes) -> bytes:
    """The smallest lossless re-encoding of a PNG (or ``data`` itself when nothing smaller holds
    exactly the same pixels).

    Text chunks are dropped (matplotlib writes none once its ``Software`` key is removed); the
    resolution (dpi) is kept.

    >>> png = io.BytesIO(); Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(png, format="PNG")
    >>> small = optimise_png(png.getvalue())
    >>> len(small) <= len(png.getvalue()) and bool((decoded_rgba(small) == decoded_rgba(png.getvalue())).all())
    True
    """
    original = decoded_rgba(data)
    dpi = _dpi(data)
    best = data
    for candidate in _candidates(original):
        encoded = _encode(candidate, dpi)
        if len(encoded) < len(best) and np.array_equal(decoded_rgba(encoded), original):
            best = encoded
    return best
