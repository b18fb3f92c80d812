"""timm's VisionTransformer: a class token (and any distillation or register tokens) before a
patch grid, global attention in every block of ``model.blocks``. Covers ViT, DeiT (distilled:
``VisionTransformerDistilled`` is a subclass), DINOv2 with registers, models without a class
token (global average pool, SigLIP's attention-pool head) and the pre-norm CLIP towers.

Attention is rebuilt from each block's own ``qkv`` output (:mod:`generator.attention.capture`), so the
capture is exact with timm's fused attention on or off.
"""

from __future__ import annotations

from .base import register_family
from .tokens import TokenSequenceFamily


@register_family
class VitFamily(TokenSequenceFamily):
    """timm ``VisionTransformer`` (ViT, DeiT, DINOv2, SigLIP, CLIP, …)."""

    name = "vit"
    capabilities = frozenset({"attention-rows", "class-token", "classifier-head", "lrp"})

    def matches(self, module) -> bool:
        from timm.models.vision_transformer import VisionTransformer

        return isinstance(module, VisionTransformer)

    def attention_capture(self, module):
        from ..attention.capture import capture_vit_attention

        return capture_vit_attention(module)
