"""Small helpers shared by sections."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..loaded_model import LoadedModel

if TYPE_CHECKING:
    import torch


def prediction_meta(model: LoadedModel, logits: torch.Tensor, k: int = 5) -> dict:
    """The model's top-k prediction for one image, as JSON-able metadata.

    Args:
        logits: (classes,) for one image.
    """
    import torch

    probs = logits.float().softmax(-1).cpu()
    top = torch.topk(probs, min(k, probs.numel()))
    return {
        "model_display": model.display_name,
        "random_weights": model.random_weights,
        "top": [
            {"index": int(i), "label": model.class_names[int(i)], "prob": round(float(p), 6)}
            for p, i in zip(top.values, top.indices)
        ],
    }
