"""timm's VisionTransformer: a class token (and any distillation or register tokens) before a
patch grid, global attention in every block of ``model.blocks``.

Attention is rebuilt from each block's own ``qkv`` output (:mod:`generator.attention`), so the
capture is exact with timm's fused attention on or off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .base import ModelFamily, register_family

if TYPE_CHECKING:
    import torch

    from ..attention import TokenLayout


@register_family
class VitFamily(ModelFamily):
    """timm ``VisionTransformer`` (ViT, DeiT, …)."""

    name = "vit"
    capabilities = frozenset({"attention-rows", "class-token", "classifier-head", "lrp"})

    def matches(self, module) -> bool:
        from timm.models.vision_transformer import VisionTransformer

        return isinstance(module, VisionTransformer)

    def model_capabilities(self, module) -> frozenset[str]:
        """Less ``"class-token"`` for a ViT without one (pooled by average or attention pool)."""
        have = super().model_capabilities(module)
        return have if getattr(module, "cls_token", None) is not None else have - {"class-token"}

    def token_layout(self, module) -> TokenLayout:
        from ..attention import vit_token_layout

        return vit_token_layout(module)

    def attention_capture(self, module):
        from ..attention import capture_vit_attention

        return capture_vit_attention(module)

    def cam_target_layer(self, module) -> torch.nn.Module:
        """The last block's ``norm1``: ``model.blocks[-1].norm1``."""
        blocks = getattr(module, "blocks", None)
        if blocks is None or len(blocks) == 0:
            raise ValueError(f"{type(module).__name__} has no blocks to take a CAM target layer from")
        return blocks[-1].norm1

    def cam_reshape(self, module) -> Callable[[torch.Tensor], torch.Tensor]:
        """(B, prefix + h·w, C) → drop the prefix tokens → (B, C, h, w), grid and prefix read from the model."""
        layout = self.token_layout(module)
        prefix, (h, w) = layout.num_prefix_tokens, layout.grid

        def vit_transform(tokens: torch.Tensor) -> torch.Tensor:
            b, n, c = tokens.shape
            if n != prefix + h * w:
                raise ValueError(f"target layer gave {n} tokens; the layout expects {prefix} + {h}×{w}")
            return tokens[:, prefix:, :].reshape(b, h, w, c).permute(0, 3, 1, 2)

        return vit_transform

    def randomise_targets(self, module, blocks: int) -> list:
        return [module.get_classifier(), *list(module.blocks)[-blocks:]]

    def structure(self, module) -> str:
        return (f"{len(module.blocks)} blocks × {module.blocks[0].attn.num_heads} heads, "
                f"patch grid {tuple(module.patch_embed.grid_size)}")
