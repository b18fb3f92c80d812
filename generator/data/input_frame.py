"""Where a model's input lies in the original image: the geometry of timm's eval transform.

timm's evaluation transform resizes an image and centre-crops it (``crop_pct``, ``crop_mode``),
so a model sees only part of a photo: a 224 px centre crop of a 451×300 photo covers about
271×271 of its pixels. :func:`input_frame` follows the transform's geometric steps and returns
that rectangle in the original image's pixel coordinates, without touching pixels.

Pure: no torch tensors, no I/O; the transform objects are only inspected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

__all__ = ["InputFrame", "UnknownTransform", "input_frame", "outside_fraction"]

# Steps that do not move pixels (tensor conversion and normalisation).
_NON_GEOMETRIC = {"ToTensor", "MaybeToTensor", "PILToTensor", "MaybePILToTensor", "Normalize", "ConvertImageDtype"}


class UnknownTransform(ValueError):
    """A transform step whose geometry is not known here (the crop cannot be shown)."""


@dataclass(frozen=True)
class InputFrame:
    """The model's input as a rectangle of the original image.

    Attributes:
        box: (x0, y0, x1, y1) in original pixels (edges, floats). Parts beyond the image are padding.
        input_size: (width, height) of the model's input in its own pixels.
        image_size: (width, height) of the original image.
    """

    box: tuple[float, float, float, float]
    input_size: tuple[int, int]
    image_size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per input pixel, along x and y."""
        x0, y0, x1, y1 = self.box
        return (x1 - x0) / self.input_size[0], (y1 - y0) / self.input_size[1]

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        """A point of the model's input (its pixels, edges) in original-image pixels."""
        sx, sy = self.scale
        return self.box[0] + x * sx, self.box[1] + y * sy

    def mask(self) -> np.ndarray:
        """(H, W) bool: the original pixels whose centres fall inside the model's input."""
        width, height = self.image_size
        x0, y0, x1, y1 = self.box
        xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
        return ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]

    def as_dict(self) -> dict[str, Any]:
        return {"box": [round(v, 3) for v in self.box], "input_size": list(self.input_size),
                "image_size": list(self.image_size)}


def _pair(size: Any) -> tuple[int, int]:
    """(height, width) from an int or a 1- or 2-sequence (torchvision's convention)."""
    if isinstance(size, int):
        return size, size
    size = list(size)
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def _resized(height: int, width: int, size: Any, max_size: int | None) -> tuple[int, int]:
    """torchvision's ``Resize`` output (height, width): an int (or 1-sequence) sets the shorter edge."""
    if size is None or isinstance(size, int) or len(size) == 1:
        short, long = (width, height) if width <= height else (height, width)
        new_short = short if size is None else (size if isinstance(size, int) else size[0])
        new_long = int(new_short * long / short)
        if max_size is not None and new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
        return (new_long, new_short) if width <= height else (new_short, new_long)
    return int(size[0]), int(size[1])


def input_frame(steps: Iterable[Any], image_size: tuple[int, int]) -> InputFrame:
    """Follow the geometric steps of an eval transform over an image of ``image_size`` = (W, H).

    Args:
        steps: the transform's steps in order (``Compose.transforms``).

    Raises:
        UnknownTransform: for a step whose geometry is not modelled here.
    """
    width, height = image_size
    # current = original * a + b, per axis
    ax = ay = 1.0
    bx = by = 0.0
    cur_w, cur_h = float(width), float(height)
    for step in steps:
        kind = type(step).__name__
        if kind in _NON_GEOMETRIC:
            continue
        if kind == "Resize":
            new_h, new_w = _resized(int(cur_h), int(cur_w), step.size, getattr(step, "max_size", None))
        elif kind == "ResizeKeepRatio":
            if getattr(step, "random_scale_prob", 0) or getattr(step, "random_aspect_prob", 0):
                raise UnknownTransform("ResizeKeepRatio with random scale or aspect has no fixed geometry")
            target_h, target_w = step.size
            ratio_h, ratio_w = cur_h / target_h, cur_w / target_w
            ratio = max(ratio_h, ratio_w) * step.longest + min(ratio_h, ratio_w) * (1.0 - step.longest)
            new_h, new_w = round(cur_h / ratio), round(cur_w / ratio)
        elif kind in ("CenterCrop", "CenterCropOrPad"):
            crop_h, crop_w = _pair(step.size)
            pad_l = (crop_w - int(cur_w)) // 2 if crop_w > cur_w else 0
            pad_t = (crop_h - int(cur_h)) // 2 if crop_h > cur_h else 0
            pad_r = (crop_w - int(cur_w) + 1) // 2 if crop_w > cur_w else 0
            pad_b = (crop_h - int(cur_h) + 1) // 2 if crop_h > cur_h else 0
            bx, by = bx + pad_l, by + pad_t
            cur_w, cur_h = cur_w + pad_l + pad_r, cur_h + pad_t + pad_b
            top, left = int(round((cur_h - crop_h) / 2.0)), int(round((cur_w - crop_w) / 2.0))
            bx, by = bx - left, by - top
            cur_w, cur_h = float(crop_w), float(crop_h)
            continue
        elif kind == "TrimBorder":
            border = step.border_size
            top, left = min(border, int(cur_h)), min(border, int(cur_h))  # timm's own (left uses h)
            bx, by = bx - left, by - top
            cur_w, cur_h = float(max(0, int(cur_w) - 2 * border)), float(max(0, int(cur_h) - 2 * border))
            continue
        else:
            raise UnknownTransform(f"the geometry of {kind} is not known")
        sx, sy = new_w / cur_w, new_h / cur_h
        ax, bx, ay, by = ax * sx, bx * sx, ay * sy, by * sy
        cur_w, cur_h = float(new_w), float(new_h)
    box = (-bx / ax, -by / ay, (cur_w - bx) / ax, (cur_h - by) / ay)
    return InputFrame(box=box, input_size=(int(cur_w), int(cur_h)), image_size=(int(width), int(height)))


def outside_fraction(footprint: np.ndarray, lost: int, frame: InputFrame) -> float:
    """Share of an edited region that the model does not see.

    Args:
        footprint: (H, W) bool, the edited pixels inside the image.
        lost: edited pixels that fell off the image (clipped), counted as outside.
        frame: the model's input in this image.

    Returns:
        A fraction in [0, 1]; 0 for an empty footprint.
    """
    total = int(footprint.sum()) + int(lost)
    if total == 0:
        return 0.0
    seen = int((footprint & frame.mask()).sum())
    return (total - seen) / total
