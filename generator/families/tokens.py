"""What the global-attention families share (timm's VisionTransformer, Eva, Beit): prefix tokens
(class, distillation, registers) before a patch grid, and global attention in every block of
``model.blocks``. Not a family itself: the families subclass :class:`TokenSequenceFamily`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .base import ModelFamily

if TYPE_CHECKING:
    import torch

    from ..attention.capture import TokenLayout



def grid_reshape(layout: TokenLayout) -> Callable[[torch.Tensor], torch.Tensor]:
    """The CAM reshape of a prefix-token layout: (B, prefix + h·w, C) → drop the prefix → (B, C, h, w)."""
    prefix, (h, w) = layout.num_prefix_tokens, layout.grid

    def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        if n != prefix + h * w:
            raise ValueError(f"target layer gave {n} tokens; the layout expects {prefix} + {h}×{w}")
        return tokens[:, prefix:, :].reshape(b, h, w, c).permute(0, 3, 1, 2)

    return tokens_to_grid

class TokenSequenceFamily(ModelFamily):
    """A family whose models are a prefix + patch token sequence through ``model.blocks``."""

    def model_capabilities(self, module) -> frozenset[str]:
        """Less ``"class-token"`` for a model without one (pooled by average or attention pool)."""
        have = super().model_capabilities(module)
        return have if getattr(module, "cls_token", None) is not None else have - {"class-token"}

    def token_layout(self, module) -> TokenLayout:
        """Class, distillation and register tokens as the model declares them, then its patch grid."""
        from ..attention.capture import vit_token_layout

        return vit_token_layout(module)

    def cam_target_layer(self, module) -> torch.nn.Module:
        """The last block's ``norm1``: ``model.blocks[-1].norm1``."""
        blocks = getattr(module, "blocks", None)
        if blocks is None or len(blocks) == 0:
            raise ValueError(f"{type(module).__name__} has no blocks to take a CAM target layer from")
        return blocks[-1].norm1

    def cam_reshape(self, module) -> Callable[[torch.Tensor], torch.Tensor]:
        """(B, prefix + h·w, C) → drop the prefix tokens → (B, C, h, w), grid and prefix read from the model."""
        return grid_reshape(self.token_layout(module))

    def randomise_targets(self, module, blocks: int) -> list:
        """The head (both heads of a distilled DeiT) and the last ``blocks`` blocks."""
        head = module.get_classifier()
        heads = list(head) if isinstance(head, tuple) else [head]
        return [*heads, *list(module.blocks)[-blocks:]]

    def structure(self, module) -> str:
        layout = self.token_layout(module)
        prefix = ", ".join(layout.prefix_names) or "no prefix tokens"
        return (f"{len(module.blocks)} blocks × {module.blocks[0].attn.num_heads} heads, "
                f"patch grid {tuple(module.patch_embed.grid_size)}" + ("" if layout.prefix_names == ("CLS",) else
                                                                      f" ({prefix})"))
