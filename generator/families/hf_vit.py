"""Hugging Face ``transformers`` ViT-like models: ViT, DeiT (class and distillation tokens), DINOv2 (with
or without registers) and BEiT, wrapped by :class:`~generator.families.hf_model.HFModel`.

Global attention in every layer (``layer.attention``); the prefix tokens are read off the embeddings
(``cls_token``, ``distillation_token``, ``register_tokens``). Attention is what the model's own eager
attention returns (:func:`~generator.families.hf_model.capture_hf_attention`). CP-LRP's rules are
written for timm's modules, so these models have no ``"lrp"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .base import ModelFamily, register_family
from .tokens import grid_reshape

if TYPE_CHECKING:
    import torch

    from ..attention.capture import TokenLayout


def _is_hf(module, windows: bool) -> bool:
    """Whether ``module`` is a wrapped transformers model, with Swin's windows or without."""
    from .hf_model import HFModel

    if not isinstance(module, HFModel):
        return False
    stages = getattr(getattr(module.hf.base_model, "encoder", None), "layers", None)
    has_windows = bool(stages) and all(hasattr(stage, "blocks") for stage in stages)
    return has_windows == windows


def patch_grid(module) -> tuple[int, int]:
    """(h, w) patches of the configured image size: ``config.image_size // config.patch_size``."""
    cfg = module.hf.config
    size = cfg.image_size if isinstance(cfg.image_size, (tuple, list)) else (cfg.image_size, cfg.image_size)
    patch = cfg.patch_size if isinstance(cfg.patch_size, (tuple, list)) else (cfg.patch_size, cfg.patch_size)
    return int(size[0]) // int(patch[0]), int(size[1]) // int(patch[1])


@register_family
class HFVitFamily(ModelFamily):
    """transformers ``ViT*``, ``DeiT*``, ``Dinov2*``, ``Dinov2WithRegisters*`` and ``Beit*`` (classifiers and headless)."""

    name = "hf-vit"
    capabilities = frozenset({"attention-rows", "class-token", "classifier-head"})

    def matches(self, module) -> bool:
        return _is_hf(module, windows=False)

    def token_layout(self, module) -> TokenLayout:
        """Class token, then DeiT's distillation token or DINOv2's registers, then the patch grid."""
        from ..attention.capture import TokenLayout

        embeddings = module.hf.base_model.embeddings
        names = ["CLS"]
        if getattr(embeddings, "distillation_token", None) is not None:
            names.append("DIST")
        registers = getattr(embeddings, "register_tokens", None)
        names += [f"REG{i}" for i in range(registers.shape[1] if registers is not None else 0)]
        return TokenLayout(prefix_names=tuple(names), grid=patch_grid(module))

    def attention_capture(self, module):
        from .hf_model import capture_hf_attention

        return capture_hf_attention(module)

    def block_output_capture(self, module):
        """Every transformer layer's output tokens (the layers whose hidden states transformers records)."""
        from ..attention.token_norms import capture_block_outputs
        from .hf_model import hf_layers

        return capture_block_outputs(hf_layers(module.hf))

    def attention_gradients(self, module, x, target=None):
        from .hf_model import hf_attention_gradients

        return hf_attention_gradients(module, x, target)

    def patch_size(self, module) -> tuple[int, int]:
        size = module.hf.base_model.embeddings.patch_embeddings.patch_size
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def cam_target_layer(self, module) -> torch.nn.Module:
        """The last layer's pre-attention LayerNorm (``layernorm_before``, DINOv2's ``norm1``), as timm's ``norm1``."""
        from .hf_model import hf_layers

        last = hf_layers(module.hf)[-1]
        return getattr(last, "layernorm_before", None) or last.norm1

    def cam_reshape(self, module) -> Callable[[torch.Tensor], torch.Tensor]:
        """(B, prefix + h·w, C) → drop the prefix tokens → (B, C, h, w) (:func:`.tokens.grid_reshape`)."""
        return grid_reshape(self.token_layout(module))

    def randomise_targets(self, module, blocks: int) -> list:
        from .hf_model import hf_layers

        return [*module.heads, *hf_layers(module.hf)[-blocks:]]

    def structure(self, module) -> str:
        cfg = module.hf.config
        return (f"{cfg.num_hidden_layers} blocks × {cfg.num_attention_heads} heads, patch grid {patch_grid(module)} "
                f"(transformers {type(module.hf).__name__})")
