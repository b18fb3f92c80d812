"""Relevance maps read from attention: rollout, gradient-weighted rollout, the CLS token's attention,
Swin rollout through shifted windows, and the last stage's window attention.

Each reads the settings of the section that draws the same quantity (``[sections.rollout]``,
``[sections.swin]``), so a map and its section's figure always agree; the parameters it reads are
part of its cache key (``params``). Registered in page order when :mod:`generator.sections` loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .registry import RelevanceMap, RelevanceMethod, register_method

if TYPE_CHECKING:
    from ..data.inputs import ModelInput
    from ..models.loaded import LoadedModel

__all__ = ["ClsAttentionMethod", "GradientRolloutMethod", "RolloutMethod", "SwinRolloutMethod",
           "SwinWindowAttentionMethod"]


class _RolloutOwned(RelevanceMethod):
    """Maps computed with the rollout section's settings (fusion, discard ratio, start block)."""

    needs = frozenset({"attention-rows", "class-token", "classifier-head"})

    def params(self) -> dict:
        rollout = self.config.sections.rollout
        return {**super().params(), "discard_ratio": rollout.discard_ratios[0], "start_block": rollout.start_block,
                "normalize": rollout.normalize, "gradient_start_block": rollout.gradient_start_block}

    def _attention(self, model: LoadedModel, inputs: ModelInput):
        import torch

        layout = model.adapter.token_layout(model.module)
        if not layout.has_class_token:
            raise ValueError(f"{model.name} has no CLS token: {self.label} reads the CLS row")
        with torch.inference_mode():
            _, attn = model.adapter.attention(model.module, inputs.x[None].to(model.device))
        return layout, layout.prefix_names.index("CLS"), attn.double()


@register_method
class RolloutMethod(_RolloutOwned):
    """Attention rollout of the CLS token, one map per configured head fusion."""

    name = "rollout"
    label = "rollout"
    description = "attention rollout of the CLS token (Abnar & Zuidema 2020), with the rollout section's settings"

    @classmethod
    def variants(cls, config) -> list[str]:
        return list(config.sections.rollout.fusions)

    def map(self, model: LoadedModel, inputs: ModelInput, target: int) -> RelevanceMap:
        from ..attention.rollout import attention_rollout, rollout_mask

        layout, cls, attn = self._attention(model, inputs)
        s = self.config.sections.rollout
        r = attention_rollout(attn, head_fusion=self.variant, discard_ratio=s.discard_ratios[0],
                              start_block=s.start_block, normalize=s.normalize, keep_index=cls)
        return RelevanceMap(rollout_mask(r, layout.grid, layout.num_prefix_tokens, query=cls)[0].cpu().numpy())


@register_method
class GradientRolloutMethod(_RolloutOwned):
    """Gradient-weighted rollout for the target class (Chefer et al. 2021)."""

    name = "gradient-rollout"
    label = "gradient rollout"
    description = "rollout of attention weighted by its gradient for the class (Chefer et al. 2021)"

    def map(self, model: LoadedModel, inputs: ModelInput, target: int) -> RelevanceMap:
        import torch

        from ..attention.rollout import gradient_rollout, rollout_mask

        layout = model.adapter.token_layout(model.module)
        cls = layout.prefix_names.index("CLS")
        _, used, grads = model.adapter.attention_gradients(model.module, inputs.x[None].to(model.device),
                                                           torch.tensor([target]))
        weighted = gradient_rollout(used.double(), grads.double(),
                                    start_block=self.config.sections.rollout.gradient_start_block)
        return RelevanceMap(rollout_mask(weighted, layout.grid, layout.num_prefix_tokens, query=cls)[0].cpu().numpy())


@register_method
class ClsAttentionMethod(_RolloutOwned):
    """The last block's CLS-token attention over the patches, averaged over heads."""

    name = "cls-attention"
    label = "last-block CLS attention"
    description = "the last block's attention from the CLS token to the patches, mean over heads"

    def params(self) -> dict:
        return RelevanceMethod.params(self)

    def map(self, model: LoadedModel, inputs: ModelInput, target: int) -> RelevanceMap:
        layout, cls, attn = self._attention(model, inputs)
        prefix = layout.num_prefix_tokens
        return RelevanceMap(attn[-1, 0, :, cls, prefix:].mean(0).reshape(layout.grid).cpu().numpy())


@register_method
@register_method
class SwinRolloutMethod(RelevanceMethod):
    """Rollout through shifted windows and patch merging, with the Swin section's rollout settings."""

    name = "swin-rollout"
    label = "Swin rollout"
    needs = frozenset({"windows", "classifier-head"})
    description = "rollout through the shifted windows and patch merging, with the Swin section's rollout settings"

    def params(self) -> dict:
        s = self.config.sections.swin
        return {**super().params(), "fusion": s.rollout_fusion, "discard_ratio": s.rollout_discard_ratio,
                "normalize": s.rollout_normalize}

    def map(self, model: LoadedModel, inputs: ModelInput, target: int) -> RelevanceMap:
        import torch

        from ..attention.windows import swin_rollout

        s = self.config.sections.swin
        with torch.inference_mode():
            _, attention, geometry = model.adapter.window_attention(model.module, inputs.x[None].to(model.device))
        relevance, _ = swin_rollout(attention, geometry, head_fusion=s.rollout_fusion,
                                    discard_ratio=s.rollout_discard_ratio, normalize=s.rollout_normalize)
        return RelevanceMap(relevance[0].cpu().numpy())


@register_method
class SwinWindowAttentionMethod(RelevanceMethod):
    """Attention received by each token in the last stage, in original order, mean over heads and queries."""

    name = "swin-window-attention"
    label = "last-stage window attention"
    needs = frozenset({"windows", "classifier-head"})
    description = "attention each token receives in the last stage's last block (shift undone), mean over heads and queries"

    def map(self, model: LoadedModel, inputs: ModelInput, target: int) -> RelevanceMap:
        import torch

        from ..attention.windows import full_attention_from_windows

        with torch.inference_mode():
            _, attention, geometry = model.adapter.window_attention(model.module, inputs.x[None].to(model.device))
        last = max(attention)
        full = full_attention_from_windows(attention[last].double(), geometry[last])  # 1, heads, N, N
        return RelevanceMap(full[0].mean(0).mean(0).reshape(geometry[last].grid).cpu().numpy())
