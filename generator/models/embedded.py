"""Small ViT and Swin models that this project trains on Fashion-MNIST and ships.

They are registered in timm's model registry, so every code path (``timm.create_model``,
``resolve_model_data_config``, timm's pretrained-file loader) treats them exactly like
the ImageNet models. Their default pretrained config points at the shipped safetensors
file, and the gallery loads them through the ordinary ``file:`` weights source.
"""

from __future__ import annotations

from pathlib import Path

from timm.models import register_model
from timm.models._registry import generate_default_cfgs
from timm.models.swin_transformer import _create_swin_transformer
from timm.models.vision_transformer import _create_vision_transformer

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Measured on the 60k Fashion-MNIST training images (grey replicated to RGB).
FASHION_MNIST_MEAN = (0.2860, 0.2860, 0.2860)
FASHION_MNIST_STD = (0.3530, 0.3530, 0.3530)

VIT_NAME = "vit_fmnist_patch4_28"
SWIN_NAME = "swin_fmnist_patch2_28"

VIT_ARGS = dict(img_size=28, patch_size=4, embed_dim=96, depth=6, num_heads=4, mlp_ratio=2.0)
SWIN_ARGS = dict(
    img_size=28, patch_size=2, window_size=7, embed_dim=48, depths=(2, 2), num_heads=(2, 4), mlp_ratio=2.0
)


def weights_path(name: str) -> Path:
    """Return the shipped safetensors file of embedded model ``name``."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def _cfg(name: str, first_conv: str, classifier: str) -> dict:
    return {
        "file": str(weights_path(name)),
        "num_classes": len(FASHION_MNIST_CLASSES),
        "input_size": (3, 28, 28),
        "pool_size": None,
        "crop_pct": 1.0,
        "crop_mode": "center",
        "interpolation": "bilinear",
        "fixed_input_size": True,
        "mean": FASHION_MNIST_MEAN,
        "std": FASHION_MNIST_STD,
        "first_conv": first_conv,
        "classifier": classifier,
        "license": "mit",
        "label_names": FASHION_MNIST_CLASSES,
    }


default_cfgs = generate_default_cfgs(
    {
        f"{VIT_NAME}.fmnist": _cfg(VIT_NAME, "patch_embed.proj", "head"),
        f"{SWIN_NAME}.fmnist": _cfg(SWIN_NAME, "patch_embed.proj", "head.fc"),
    }
)


@register_model
def vit_fmnist_patch4_28(pretrained: bool = False, **kwargs):
    """ViT with a CLS token for 28×28 Fashion-MNIST: patch 4 (a 7×7 grid), 6 blocks × 4 heads."""
    kwargs = {"num_classes": len(FASHION_MNIST_CLASSES), **VIT_ARGS, **kwargs}
    return _create_vision_transformer(VIT_NAME, pretrained=pretrained, **kwargs)


@register_model
def swin_fmnist_patch2_28(pretrained: bool = False, **kwargs):
    """Swin for 28×28 Fashion-MNIST: patch 2 (14×14 grid), window 7 (4 windows, shifted), then one merge."""
    kwargs = {"num_classes": len(FASHION_MNIST_CLASSES), **SWIN_ARGS, **kwargs}
    return _create_swin_transformer(SWIN_NAME, pretrained=pretrained, **kwargs)

# The shipped training recipes (see generator.devtools.train_demo.TrainSettings for the other defaults).
TRAIN_RECIPES = {
    VIT_NAME: dict(epochs=16, threads=1),
    SWIN_NAME: dict(epochs=18, threads=2),
}
