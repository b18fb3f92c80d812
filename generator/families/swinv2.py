"""timm's SwinTransformerV2: shifted-window attention like Swin v1, but cosine attention
(``cos(q, k)`` times a learned per-head scale, clamped at log 100) and a continuous position bias
(an MLP over log-spaced relative coordinates, ``16·sigmoid``); post-norm blocks.

Its window attention has no fused path and adds the q/v biases inside ``F.linear``, so the capture
reads each block's post-softmax attention at the input of its ``attn_drop`` (:mod:`generator.attention.windows`).
"""

from __future__ import annotations

from .base import register_family
from .swin import SwinFamily


@register_family
class SwinV2Family(SwinFamily):
    """timm ``SwinTransformerV2``."""

    name = "swinv2"
    capabilities = frozenset({"windows", "classifier-head"})

    def matches(self, module) -> bool:
        from timm.models.swin_transformer_v2 import SwinTransformerV2

        return isinstance(module, SwinTransformerV2)

    def attention_capture(self, module):
        from ..attention.windows import capture_window_attention

        return capture_window_attention(module, softmax_at=lambda attn: attn.attn_drop)

    def cam_target_layer(self, module):
        """The last block itself: ``model.layers[-1].blocks[-1]`` (post-norm: its ``norm1`` sees only the
        attention branch, the block's output is the features the head pools)."""
        return module.layers[-1].blocks[-1]

    def window_position_bias(self, module) -> dict:
        """(stage, block) → ``16·sigmoid(cpb_mlp(relative coordinates))`` gathered per (query, key) pair."""
        import torch

        from ..attention.windows import window_blocks

        out = {}
        for key, block in window_blocks(module).items():
            attn = block.attn
            n = attn.window_size[0] * attn.window_size[1]
            table = attn.cpb_mlp(attn.relative_coords_table).view(-1, attn.num_heads)
            bias = table[attn.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
            out[key] = 16 * torch.sigmoid(bias)
        return out
