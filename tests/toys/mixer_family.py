"""A toy model family: timm's MLP-Mixer (no attention at all, a head on mean-pooled patch tokens).

Registered by a test with ``register_family(ToyMixerFamily)``; nothing else in the package changes.
"""

from __future__ import annotations

import timm

from generator.families.base import ModelFamily


@timm.models.register_model
def mixer_toy_patch4_28(pretrained: bool = False, **kwargs):
    """A tiny timm MLP-Mixer for 28×28 inputs (patch 4: a 7×7 grid, 2 blocks)."""
    from timm.models.mlp_mixer import MlpMixer

    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    model = MlpMixer(**{"num_classes": 10, "img_size": 28, "patch_size": 4, "num_blocks": 2, "embed_dim": 32, **kwargs})
    model.pretrained_cfg = model.default_cfg = {
        "input_size": (3, 28, 28), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bilinear",
        "crop_pct": 1.0, "crop_mode": "center", "num_classes": 10, "architecture": "mixer_toy_patch4_28"}
    return model


class ToyMixerFamily(ModelFamily):
    """timm's MLP-Mixer: a classifier head, a token grid, no attention."""

    name = "toy-mixer"
    capabilities = frozenset({"classifier-head"})

    def matches(self, module) -> bool:
        return type(module).__name__ == "MlpMixer"

    def token_layout(self, module):
        from generator.attention.capture import TokenLayout

        return TokenLayout(prefix_names=(), grid=tuple(module.stem.grid_size))

    def cam_target_layer(self, module):
        return module.blocks[-1].norm1

    def cam_reshape(self, module):
        h, w = self.token_layout(module).grid
        return lambda t: t.reshape(t.shape[0], h, w, t.shape[-1]).permute(0, 3, 1, 2)

    def randomise_targets(self, module, blocks):
        return [module.get_classifier(), *list(module.blocks)[-blocks:]]

    def patch_size(self, module):
        return tuple(module.stem.patch_size)

    def structure(self, module) -> str:
        return f"{len(module.blocks)} mixer blocks, grid {tuple(module.stem.grid_size)}"
