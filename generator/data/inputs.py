"""One image prepared for one model (what every section's compute step receives)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from .images import ImageItem
    from ..models.loaded import LoadedModel


@dataclass
class ModelInput:
    """One image prepared for one model.

    Attributes:
        view: (h, w, 3) uint8, the resized/cropped image the model sees.
        x: (3, h, w) float32, normalised with the model's data config.
    """

    view: np.ndarray
    x: torch.Tensor


def prepare_input(model: LoadedModel, image: ImageItem) -> ModelInput:
    """The model's own preprocessing (timm's eval transform from the resolved data config)."""
    from ..models.loading import preprocess

    view, x = preprocess(model, image.rgb)
    return ModelInput(view=view, x=x)
