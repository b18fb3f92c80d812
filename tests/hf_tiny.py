"""Tiny transformers checkpoints of every supported kind, written with save_pretrained (for the hf tests).

Each is seeded, 2 layers wide 32 (Swin: 2 stages), 32×32 input, and saved with its image processor, so
that the loader reads them through the real ``from_pretrained`` path. A test module imports this only
after ``pytest.importorskip("transformers")``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as T

LABELS = ("cat", "dog", "fox")
_ID2LABEL = dict(enumerate(LABELS))
_LABEL2ID = {v: k for k, v in _ID2LABEL.items()}
_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
_SQUARE = {"height": 32, "width": 32}


def _head(**kwargs) -> dict:
    return dict(id2label=_ID2LABEL, label2id=_LABEL2ID, **kwargs)


#: kind → (model class, config, image processor); the kinds the issue names.
def specs() -> dict[str, tuple]:
    return {
        "vit": (T.ViTForImageClassification, T.ViTConfig(**_VIT, intermediate_size=64, **_head()),
                T.ViTImageProcessor(size=_SQUARE)),
        "deit": (T.DeiTForImageClassificationWithTeacher, T.DeiTConfig(**_VIT, intermediate_size=64, **_head()),
                 T.DeiTImageProcessor(size={"height": 36, "width": 36}, crop_size=_SQUARE)),
        "dinov2": (T.Dinov2Model, T.Dinov2Config(**_VIT, mlp_ratio=2),
                   T.BitImageProcessor(size={"shortest_edge": 36}, crop_size=_SQUARE)),
        "dinov2-registers": (T.Dinov2WithRegistersForImageClassification,
                             T.Dinov2WithRegistersConfig(**_VIT, mlp_ratio=2, num_register_tokens=2, **_head()),
                             T.BitImageProcessor(size={"shortest_edge": 36}, crop_size=_SQUARE)),
        "beit": (T.BeitForImageClassification,
                 T.BeitConfig(**_VIT, intermediate_size=64, use_relative_position_bias=True, **_head()),
                 T.BeitImageProcessor(size=_SQUARE, do_center_crop=False)),
        "swin": (T.SwinForImageClassification,
                 T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                              window_size=4, **_head()),
                 T.ViTImageProcessor(size=_SQUARE)),
    }


KINDS = tuple(specs())


def save_tiny(kind: str, folder: Path, seed: int = 0) -> Path:
    """Write a seeded tiny checkpoint of ``kind`` (model, config, image processor) into ``folder``."""
    cls, config, processor = specs()[kind]
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():  # BEiT and DINOv2 start some parameters at zero: give every weight a value
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
