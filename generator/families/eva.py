"""timm's Eva (EVA-02 and the RoPE ViTs built on it): a class token and any register tokens before
a patch grid, global attention with rotary position embeddings on q and k (patch tokens only),
SwiGLU MLPs; the head pools by average or the class token.

q and k are rotated between the projection and their product, and the q/v biases are added
inside ``F.linear``, so the softmax cannot be rebuilt from a projection's output: the capture runs
each attention module's own explicit path (``fused_attn`` off on those modules for the pass) and
reads its softmax at ``attn_drop`` (:func:`generator.attention.capture.capture_unfused_softmax`).
"""

from __future__ import annotations

from .base import register_family
from .tokens import TokenSequenceFamily


@register_family
class EvaFamily(TokenSequenceFamily):
    """timm ``Eva`` (EVA-02, RoPE-ViT)."""

    name = "eva"
    capabilities = frozenset({"attention-rows", "class-token", "classifier-head"})

    def matches(self, module) -> bool:
        from timm.models.eva import Eva

        return isinstance(module, Eva)

    def attention_capture(self, module):
        from ..attention.capture import block_attention_modules, capture_unfused_softmax

        return capture_unfused_softmax(block_attention_modules(module))
