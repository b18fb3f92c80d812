"""Hugging Face ``transformers`` Swin (``SwinForImageClassification``, headless ``SwinModel``), wrapped by
:class:`~generator.families.hf_model.HFModel`: shifted windows in stages joined by patch merging
(``base_model.encoder.layers[s].blocks[b]``), the head pooling the last stage's tokens.

Window attention is what each layer's eager attention returns, shaped as timm's capture shapes it
(:func:`~generator.families.hf_model.capture_hf_windows`). No ``"lrp"``: its rules are written for timm's modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .base import ModelFamily, register_family
from .hf_vit import _is_hf, patch_grid

if TYPE_CHECKING:
    import torch

    from ..attention.capture import TokenLayout


@register_family
class HFSwinFamily(ModelFamily):
    """transformers ``Swin*`` (v1)."""

    name = "hf-swin"
    capabilities = frozenset({"windows", "classifier-head"})

    def matches(self, module) -> bool:
        return _is_hf(module, windows=True)

    def _stage_grids(self, module) -> list[tuple[int, int]]:
        """Each stage's (h, w) token grid: the patch grid, halved (rounding up) after every patch merging."""
        grids, (h, w) = [], patch_grid(module)
        for stage in module.hf.base_model.encoder.layers:
            grids.append((h, w))
            if stage.downsample is not None:
                h, w = (h + 1) // 2, (w + 1) // 2
        return grids

    def token_layout(self, module) -> TokenLayout:
        """No prefix tokens; the last stage's grid."""
        from ..attention.capture import TokenLayout

        return TokenLayout(prefix_names=(), grid=self._stage_grids(module)[-1])

    def attention_capture(self, module):
        from .hf_model import capture_hf_windows

        return capture_hf_windows(module)

    def patch_size(self, module) -> tuple[int, int]:
        size = module.hf.base_model.embeddings.patch_embeddings.patch_size
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def window_position_bias(self, module) -> dict:
        """(stage, block) → the (heads, w², w²) relative position bias each layer's attention adds."""
        from .hf_model import hf_swin_layers

        return {key: layer.attention.relative_position_bias()[0] for key, layer in hf_swin_layers(module.hf).items()}

    def cam_target_layer(self, module) -> torch.nn.Module:
        """The last layer's ``layernorm_before``, as timm's ``norm1``."""
        return module.hf.base_model.encoder.layers[-1].blocks[-1].layernorm_before

    def cam_reshape(self, module) -> Callable[[torch.Tensor], torch.Tensor]:
        """(B, h·w, C) of the last stage → (B, C, h, w)."""
        h, w = self.token_layout(module).grid

        def hf_swin_transform(tokens: torch.Tensor) -> torch.Tensor:
            b, n, c = tokens.shape
            if n != h * w:
                raise ValueError(f"target layer gave {n} tokens; the last stage's grid is {h}×{w}")
            return tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)

        return hf_swin_transform

    def randomise_targets(self, module, blocks: int) -> list:
        every = [b for stage in module.hf.base_model.encoder.layers for b in stage.blocks]
        return [*module.heads, *every[-blocks:]]

    def window_geometry(self, module) -> dict:
        """(stage, block) → (window size, shift size) as the layers use them: a window no smaller than its
        stage's grid becomes the grid, unshifted (transformers clamps it in the forward pass)."""
        out = {}
        for s, (stage, grid) in enumerate(zip(module.hf.base_model.encoder.layers, self._stage_grids(module))):
            for b, block in enumerate(stage.blocks):
                size, shift = int(block.window_size), int(block.shift_size)
                if min(grid) <= size:
                    size, shift = min(grid), 0
                out[(s, b)] = ((size, size), (shift, shift))
        return out

    def structure(self, module) -> str:
        cfg = module.hf.config
        return (f"{len(cfg.depths)} stages of {'-'.join(map(str, cfg.depths))} blocks, "
                f"{'-'.join(map(str, cfg.num_heads))} heads, window ({cfg.window_size}, {cfg.window_size}) "
                f"(transformers {type(module.hf).__name__})")
