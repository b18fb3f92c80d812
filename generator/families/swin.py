"""timm's SwinTransformer: no class token; shifted-window attention in stages joined by patch
merging (``model.layers[s].blocks[b]``); the head pools the last stage's tokens.

Window attention is rebuilt from each block's own ``qkv`` output (:mod:`generator.attention.windows`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .base import ModelFamily, register_family

if TYPE_CHECKING:
    import torch

    from ..attention.capture import TokenLayout


@register_family
class SwinFamily(ModelFamily):
    """timm ``SwinTransformer`` (v1)."""

    name = "swin"
    capabilities = frozenset({"windows", "classifier-head", "lrp"})

    def matches(self, module) -> bool:
        from timm.models.swin_transformer import SwinTransformer

        return isinstance(module, SwinTransformer)

    def token_layout(self, module) -> TokenLayout:
        """No prefix tokens; the grid of the last stage (the input grid halved by every patch merging)."""
        import torch

        from ..attention.capture import TokenLayout

        h, w = (int(g) for g in module.patch_embed.grid_size)
        for stage in module.layers:
            if not isinstance(stage.downsample, torch.nn.Identity):
                h, w = (h + 1) // 2, (w + 1) // 2
        return TokenLayout(prefix_names=(), grid=(h, w))

    def attention_capture(self, module):
        from ..attention.windows import capture_window_attention

        return capture_window_attention(module)

    def cam_target_layer(self, module) -> torch.nn.Module:
        """The last block's ``norm1``: ``model.layers[-1].blocks[-1].norm1``."""
        return module.layers[-1].blocks[-1].norm1

    def cam_reshape(self, module) -> Callable[[torch.Tensor], torch.Tensor]:
        """(B, h, w, C) → (B, C, h, w)."""

        def swin_transform(features: torch.Tensor) -> torch.Tensor:
            if features.ndim != 4:
                raise ValueError(f"expected (B, h, w, C) Swin features, got shape {tuple(features.shape)}")
            return features.permute(0, 3, 1, 2)

        return swin_transform

    def randomise_targets(self, module, blocks: int) -> list:
        """The head and the last ``blocks`` blocks, counted across stages from the end."""
        every = [b for stage in module.layers for b in stage.blocks]
        return [module.get_classifier(), *every[-blocks:]]

    def window_geometry(self, module) -> dict:
        """(stage, block) → (window size, shift size) as the blocks declare them."""
        return {(s, b): (tuple(block.window_size), tuple(block.shift_size))
                for s, stage in enumerate(module.layers) for b, block in enumerate(stage.blocks)}

    def window_position_bias(self, module) -> dict:
        """(stage, block) → the block's relative position bias (``WindowAttention._get_rel_pos_bias()``)."""
        from ..attention.windows import window_blocks

        return {key: block.attn._get_rel_pos_bias()[0] for key, block in window_blocks(module).items()}

    def structure(self, module) -> str:
        depths = [len(stage.blocks) for stage in module.layers]
        heads = [stage.blocks[0].attn.num_heads for stage in module.layers]
        return (f"{len(depths)} stages of {'-'.join(map(str, depths))} blocks, "
                f"{'-'.join(map(str, heads))} heads, window {tuple(module.layers[0].blocks[0].window_size)}")
