"""timm's Beit: a class token before a patch grid, global attention with a learned relative
position bias (per block, or one shared by every block) added to q·kᵀ; the head pools by average.

The q/v biases are added inside ``F.linear`` and the relative position bias inside the attention
module, so the capture runs each module's own explicit path (``fused_attn`` off on those modules
for the pass) and reads its softmax at ``attn_drop`` (:func:`generator.attention.capture.capture_unfused_softmax`).
"""

from __future__ import annotations

from .base import register_family
from .tokens import TokenSequenceFamily


@register_family
class BeitFamily(TokenSequenceFamily):
    """timm ``Beit`` (BEiT, BEiT v2)."""

    name = "beit"
    capabilities = frozenset({"attention-rows", "class-token", "classifier-head"})

    def matches(self, module) -> bool:
        from timm.models.beit import Beit

        return isinstance(module, Beit)

    def attention_capture(self, module):
        from ..attention.capture import block_attention_modules, capture_unfused_softmax

        return capture_unfused_softmax(block_attention_modules(module))
