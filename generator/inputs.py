"""One image prepared for one model (what every section's compute step receives)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass
class ModelInput:
    """One image prepared for one model.

    Attributes:
        view: (h, w, 3) uint8, the resized/cropped image the model sees.
        x: (3, h, w) float32, normalised with the model's data config.
    """

    view: np.ndarray
    x: torch.Tensor
