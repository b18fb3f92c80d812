"""A Hugging Face ``transformers`` image model as the gallery calls it, and its attention capture.

:class:`HFModel` wraps a ``PreTrainedModel`` (ViT, DeiT, DINOv2 with or without registers, BEiT,
Swin) so that ``module(x)`` gives (B, classes) logits, or (B, D) pooled features for a headless
``*Model``, as a timm model does. The capture runs the model's own eager attention (the
probabilities ``output_attentions=True`` returns) for one pass and reads them off each layer's
attention output; the attention implementation is switched back on exit.

Only :mod:`generator.families` imports this module; ``transformers`` itself is imported by the loader.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from ..attention.capture import AttentionCaptureError
from ..attention.windows import BlockGeometry

__all__ = ["HFModel", "capture_hf_attention", "capture_hf_windows", "eager_attention", "hf_attention_gradients",
           "hf_layers", "hf_swin_layers"]


class HFModel(torch.nn.Module):
    """``module(x)`` → (B, classes) logits (or (B, D) pooled features when headless) of a transformers model.

    Attributes:
        hf: the wrapped ``PreTrainedModel``, in eval mode.
        num_classes: the head's classes; 0 for a headless model.
    """

    def __init__(self, hf: torch.nn.Module):
        super().__init__()
        self.hf = hf
        self.probe_head: torch.nn.Linear | None = None  # set by reset_classifier (the linear probe)
        self.num_classes = sum(h.out_features for h in self.heads[:1])

    @property
    def heads(self) -> list[torch.nn.Linear]:
        """The model's linear classifiers (DeiT with teacher has two, whose logits it averages); [] when headless."""
        return [m for name, m in self.hf.named_children() if "classifier" in name and isinstance(m, torch.nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) normalised → (B, classes) logits, or (B, D) pooled features when headless."""
        if self.probe_head is not None:
            return self.probe_head(self.forward_features(x))
        out = self.hf(pixel_values=x)
        if self.heads:
            return out.logits
        return out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state[:, 0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D·heads): what the classifiers read (their inputs side by side); pooled features when headless."""
        heads = self.heads
        if not heads:
            return self.forward(x)
        seen: list[torch.Tensor] = [None] * len(heads)  # type: ignore[list-item]

        def keep(i):
            def hook(_m, args):
                seen[i] = args[0]

            return hook

        handles = [h.register_forward_pre_hook(keep(i)) for i, h in enumerate(heads)]
        try:
            self.hf(pixel_values=x)
        finally:
            for handle in handles:
                handle.remove()
        return torch.cat(seen, dim=-1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The head on :meth:`forward_features` (the mean of the classifiers' logits, as the model computes it)."""
        if pre_logits:
            return features
        if self.probe_head is not None:
            return self.probe_head(features)
        heads = self.heads
        parts = features.split([h.in_features for h in heads], dim=-1)
        return torch.stack([h(p) for h, p in zip(heads, parts)]).mean(0)

    def get_classifier(self) -> torch.nn.Module:
        if self.probe_head is not None:
            return self.probe_head
        heads = self.heads
        return heads[0] if len(heads) == 1 else torch.nn.ModuleList(heads)

    def reset_classifier(self, num_classes: int) -> None:
        """A new linear head on :meth:`forward_features` (the linear probe's), replacing the model's own."""
        width = sum(h.in_features for h in self.heads) or int(self.hf.config.hidden_size)
        param = next(self.parameters())
        self.probe_head = torch.nn.Linear(width, num_classes).to(param.device, param.dtype)
        self.num_classes = num_classes


@contextmanager
def eager_attention(hf: Any) -> Iterator[None]:
    """The model's eager attention (which materialises the probabilities) for this block only; the
    implementation it had (e.g. SDPA) is set back on exit, also on error."""
    before = hf.config._attn_implementation
    if before == "eager":
        yield
        return
    hf.set_attn_implementation("eager")
    try:
        yield
    finally:
        hf.set_attn_implementation(before)


def hf_layers(hf: Any) -> list[torch.nn.Module]:
    """The transformer layers of a ViT-like model, in forward order (the class it records hidden states of).

    Raises:
        AttentionCaptureError: no layers, or a layer without an ``attention`` submodule.
    """
    layer_class = type(hf)._can_record_outputs.get("hidden_states")
    layers = [m for m in hf.modules() if isinstance(layer_class, type) and isinstance(m, layer_class)]
    if not layers or not all(isinstance(getattr(m, "attention", None), torch.nn.Module) for m in layers):
        raise AttentionCaptureError(f"{type(hf).__name__} has no transformer layers with an attention module to hook")
    return layers


def hf_swin_layers(hf: Any) -> dict[tuple[int, int], torch.nn.Module]:
    """Every Swin layer by (stage, block), 0-based: ``base_model.encoder.layers[s].blocks[b]``."""
    stages = getattr(getattr(hf.base_model, "encoder", None), "layers", None)
    if not stages:
        raise AttentionCaptureError(f"{type(hf).__name__} has no stages of window layers (encoder.layers) to hook")
    return {(s, b): block for s, stage in enumerate(stages) for b, block in enumerate(stage.blocks)}


def _attention_output_hooks(modules: list[torch.nn.Module], store) -> list:
    """Forward hooks storing each module's returned attention probabilities (``output[1]``) by index."""

    def hook_for(index: int):
        def hook(module, args, output):
            if not isinstance(output, tuple) or not isinstance(output[1], torch.Tensor):
                raise AttentionCaptureError(f"attention module {index} returned no probabilities; is it eager?")
            store(index, module, args, output[1])

        return hook

    return [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]


@contextmanager
def capture_hf_attention(module: HFModel) -> Iterator[dict]:
    """While active, a forward pass of ``module`` fills ``yielded["attn"]`` (blocks, B, heads, T, T) with the
    probabilities each layer's eager attention returns, and marks each in ``yielded["done"]``."""
    attention = [layer.attention for layer in hf_layers(module.hf)]
    state: dict = {"attn": None, "done": [False] * len(attention)}
    seen: list[torch.Tensor | None] = [None] * len(attention)

    def store(index, _module, _args, probs):
        seen[index] = probs.detach()
        state["done"][index] = True
        if all(state["done"]):
            state["attn"] = torch.stack(seen)  # type: ignore[arg-type]

    handles = _attention_output_hooks(attention, store)
    try:
        with eager_attention(module.hf):
            yield state
    finally:
        for handle in handles:
            handle.remove()


def hf_attention_gradients(module: HFModel, x: torch.Tensor, target: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention of one eager pass and the gradient of the target logit with respect to it.

    Args:
        x: (B, 3, H, W) normalised input.
        target: (B,) class indices; default: the predicted classes.

    Returns:
        logits (B, classes), detached; attn (blocks, B, heads, T, T), detached; grads, the shape of attn.
    """
    attention = [layer.attention for layer in hf_layers(module.hf)]
    seen: list[torch.Tensor | None] = [None] * len(attention)

    def store(index, _module, _args, probs):
        seen[index] = probs  # still in the graph: the tensor multiplied with V

    handles = _attention_output_hooks(attention, store)
    try:
        with torch.enable_grad(), eager_attention(module.hf):
            logits = module(x.detach().requires_grad_(True))
            if any(a is None for a in seen):
                raise AttentionCaptureError(f"no attention captured for blocks {[i for i, a in enumerate(seen) if a is None]}")
            if target is None:
                target = logits.argmax(dim=-1)
            score = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
            grads = torch.autograd.grad(score, seen)
    finally:
        for handle in handles:
            handle.remove()
    return logits.detach(), torch.stack([a.detach() for a in seen]), torch.stack(grads)


@contextmanager
def capture_hf_windows(module: HFModel) -> Iterator[tuple[dict, dict]]:
    """While active, forward passes fill (attention, geometry) dicts keyed by (stage, block), as
    :func:`generator.attention.windows.capture_window_attention` does for timm: attention[key] is
    (B, windows, heads, N, N), windows row-major over the shifted (and padded) grid."""
    layers = hf_swin_layers(module.hf)
    attention: dict[tuple[int, int], torch.Tensor] = {}
    geometry: dict[tuple[int, int], BlockGeometry] = {}

    def hook_for(key):
        def hook(layer, args, output):
            h, w = (int(v) for v in args[1])  # input_dimensions: the stage's grid
            size, shift = int(layer.window_size), int(layer.shift_size)  # as forward clamped them
            probs = output[1]
            if not isinstance(probs, torch.Tensor):
                raise AttentionCaptureError(f"stage {key[0]} block {key[1]} returned no probabilities; is it eager?")
            windows = -(-h // size) * -(-w // size)  # the layer pads the grid up to whole windows
            attention[key] = probs.detach().reshape(-1, windows, *probs.shape[1:])
            geometry[key] = BlockGeometry(grid=(h, w), window=(size, size), shift=(shift, shift))

        return hook

    handles = [layer.register_forward_hook(hook_for(key)) for key, layer in layers.items()]
    try:
        with eager_attention(module.hf):
            yield attention, geometry
    finally:
        for handle in handles:
            handle.remove()
