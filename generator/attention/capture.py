"""ViT attention capture: the post-softmax attention of every block, in the logits' forward pass.

Hooks read each attention module's own ``qkv`` projection output (so nothing is computed
twice), apply its q/k norms and scale, and recompute ``softmax(q·kᵀ·scale + mask)`` exactly
as timm's unfused path does. This works whether timm's fused attention (SDPA) is on or off:
on the fused path timm never materialises the softmax, so hooking ``attn_drop`` would see
nothing. All hooks are removed in ``finally``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Union

import torch
from timm.layers.attention import Attention, maybe_add_mask, resolve_self_attn_mask

__all__ = [
    "AttentionCaptureError",
    "TokenLayout",
    "block_attention_modules",
    "capture_unfused_softmax",
    "query_attention_maps",
    "unfused_attention",
    "vit_attention",
    "vit_attention_gradients",
    "vit_attention_modules",
    "vit_token_layout",
]


@contextmanager
def unfused_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run timm's explicit softmax(q k^T) v path in every attention module (ViT and Swin alike),
    so that the attention matrix exists as a tensor and its matmuls are visible; restored on exit."""
    modules = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    before = [m.fused_attn for m in modules]
    try:
        for m in modules:
            m.fused_attn = False
        yield
    finally:
        for m, fused in zip(modules, before):
            m.fused_attn = fused


class AttentionCaptureError(RuntimeError):
    """The model has nothing to hook, or a hook captured nothing."""


@dataclass(frozen=True)
class TokenLayout:
    """Where the patch tokens sit in a model's sequence (:meth:`generator.families.ModelFamily.token_layout`).

    Attributes:
        prefix_names: names of the leading non-patch tokens, in order (e.g. ``("CLS", "REG0")``).
        grid: (h, w) grid of the tokens that grid-level maps live on (a ViT's patch grid, a Swin's last stage).
    """

    prefix_names: tuple[str, ...]
    grid: tuple[int, int]

    @property
    def num_prefix_tokens(self) -> int:
        return len(self.prefix_names)

    @property
    def has_class_token(self) -> bool:
        return "CLS" in self.prefix_names

    @property
    def class_token_index(self) -> int | None:
        """Position of the class token in the sequence, or None when the model has none."""
        return self.prefix_names.index("CLS") if self.has_class_token else None

    @property
    def register_count(self) -> int:
        """Register tokens among the prefix tokens."""
        return sum(name.startswith("REG") for name in self.prefix_names)

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.grid[0] * self.grid[1]


def vit_token_layout(model: torch.nn.Module) -> TokenLayout:
    """Read the token layout (prefix tokens, patch grid) from a timm VisionTransformer."""
    names: list[str] = []
    if getattr(model, "cls_token", None) is not None:
        names.append("CLS")
    if getattr(model, "dist_token", None) is not None:
        names.append("DIST")
    num_prefix = int(getattr(model, "num_prefix_tokens", len(names)))
    names += [f"REG{i}" for i in range(num_prefix - len(names))]
    grid = tuple(int(g) for g in model.patch_embed.grid_size)
    return TokenLayout(prefix_names=tuple(names), grid=grid)  # type: ignore[arg-type]


def vit_attention_modules(model: torch.nn.Module) -> list[Attention]:
    """The attention module of every block, in order.

    Raises:
        AttentionCaptureError: if the model has no blocks, or a block's attention is of a
            kind whose softmax cannot be rebuilt from a fused ``qkv`` projection.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise AttentionCaptureError(f"{type(model).__name__} has no transformer blocks (model.blocks) to hook")
    modules = []
    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        if not isinstance(attn, Attention):
            raise AttentionCaptureError(
                f"block {i} of {type(model).__name__} has attention module {type(attn).__name__}; "
                "only timm.layers.Attention (fused qkv projection) is supported"
            )
        modules.append(attn)
    return modules


def _softmax_from_qkv(module: Attention, qkv: torch.Tensor, attn_mask, is_causal: bool,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """Rebuild timm's unfused attention probabilities from a qkv projection output.

    Args:
        qkv: (batch, tokens, 3·heads·head_dim) output of ``module.qkv``.
        out: optional (batch, heads, tokens, tokens) tensor to write the result into.

    Returns:
        (batch, heads, tokens, tokens) post-softmax attention.
    """
    batch, tokens, _ = qkv.shape
    q, k, _v = qkv.reshape(batch, tokens, 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = module.q_norm(q), module.k_norm(k)
    q = q * module.scale
    scores = q @ k.transpose(-2, -1)
    scores = maybe_add_mask(scores, resolve_self_attn_mask(tokens, scores, attn_mask, is_causal))
    if out is None:
        return scores.softmax(dim=-1)
    # the same kernel as Tensor.softmax, written straight into the caller's buffer (no stacking copy)
    return torch.ops.aten._softmax.out(scores, -1, False, out=out)


@contextmanager
def capture_vit_attention(model: torch.nn.Module) -> Iterator[dict]:
    """Context manager: while active, a forward pass fills ``yielded["attn"]``, a
    (blocks, batch, heads, tokens, tokens) tensor allocated at the first block, and marks each
    block in ``yielded["done"]``. Hooks are removed on exit, also on error."""
    modules = vit_attention_modules(model)
    state: dict = {"attn": None, "done": [False] * len(modules)}
    qkv_outputs: dict[int, torch.Tensor] = {}
    handles = []

    def store_qkv(index: int):
        def hook(_module, _args, output):
            qkv_outputs[index] = output

        return hook

    def compute(index: int):
        def hook(module, args, kwargs, _output):
            qkv = qkv_outputs.pop(index, None)
            if qkv is None:
                raise AttentionCaptureError(f"block {index}: the qkv projection did not run")
            attn_mask = kwargs.get("attn_mask", args[1] if len(args) > 1 else None)
            is_causal = bool(kwargs.get("is_causal", args[2] if len(args) > 2 else False))
            batch, tokens, _ = qkv.shape
            if state["attn"] is None:
                state["attn"] = qkv.new_empty(len(modules), batch, module.num_heads, tokens, tokens)
            with torch.no_grad():
                _softmax_from_qkv(module, qkv.detach(), attn_mask, is_causal, out=state["attn"][index])
            state["done"][index] = True

        return hook

    try:
        for i, module in enumerate(modules):
            handles.append(module.qkv.register_forward_hook(store_qkv(i)))
            handles.append(module.register_forward_hook(compute(i), with_kwargs=True))
        yield state
    finally:
        for handle in handles:
            handle.remove()


def block_attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every block's attention module (``model.blocks[i].attn``) that runs its softmax before ``attn_drop``.

    Raises:
        AttentionCaptureError: the model has no blocks, or a block's attention has no ``attn_drop``.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise AttentionCaptureError(f"{type(model).__name__} has no transformer blocks (model.blocks) to hook")
    modules = [getattr(block, "attn", None) for block in blocks]
    for i, attn in enumerate(modules):
        if not isinstance(getattr(attn, "attn_drop", None), torch.nn.Module):
            raise AttentionCaptureError(f"block {i} of {type(model).__name__} has attention module "
                                        f"{type(attn).__name__} without an attn_drop to read the softmax at")
    return modules


@contextmanager
def capture_unfused_softmax(modules: list[torch.nn.Module]) -> Iterator[dict]:
    """Context manager: while active, every module of ``modules`` runs its own explicit
    ``softmax(q·kᵀ·scale + bias)`` path, and a forward pass fills ``yielded["attn"]``, a
    (blocks, batch, heads, tokens, tokens) tensor allocated at the first block, with the input of
    each module's ``attn_drop`` (the post-softmax attention, whatever its bias, RoPE or form).

    ``fused_attn`` is switched off on these modules only and restored on exit; hooks are removed on
    exit, also on error. Used where the softmax cannot be rebuilt from a projection's output (biases
    added inside ``F.linear``, RoPE applied between projection and product).
    """
    state: dict = {"attn": None, "done": [False] * len(modules)}
    switched = [m for m in modules if isinstance(getattr(m, "fused_attn", None), bool)]
    before = [m.fused_attn for m in switched]
    handles = []

    def store(index: int):
        def hook(_module, args):
            probs = args[0]  # batch, heads, tokens, tokens
            if state["attn"] is None:
                state["attn"] = probs.new_empty(len(modules), *probs.shape)
            state["attn"][index].copy_(probs.detach())
            state["done"][index] = True

        return hook

    try:
        for m in switched:
            m.fused_attn = False
        for i, module in enumerate(modules):
            handles.append(module.attn_drop.register_forward_pre_hook(store(i)))
        yield state
    finally:
        for handle in handles:
            handle.remove()
        for m, fused in zip(switched, before):
            m.fused_attn = fused


def vit_attention(model: torch.nn.Module, x: torch.Tensor, capture=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` once and return its logits and every block's attention.

    Args:
        model: a timm VisionTransformer (eval mode recommended).
        x: (batch, 3, H, W) input, already normalised.
        capture: the context manager factory that captures it (a family adapter's
            :meth:`~generator.families.ModelFamily.attention_capture`); default: timm's ViT blocks.

    Returns:
        logits: (batch, classes), identical to ``model(x)``.
        attn: (blocks, batch, heads, tokens, tokens) post-softmax attention; rows sum to 1.

    Raises:
        AttentionCaptureError: no attention blocks, or a block's hook captured nothing.
    """
    with (capture or capture_vit_attention)(model) as state:
        logits = model(x)
    missing = [i for i, done in enumerate(state["done"]) if not done]
    if missing:
        raise AttentionCaptureError(f"no attention captured for blocks {missing}; did the forward pass skip them?")
    return logits, state["attn"]


Query = Union[str, int]


def query_attention_maps(attn: torch.Tensor, layout: TokenLayout, query: Query = "cls") -> torch.Tensor:
    """One query's attention to the patch tokens, on the patch grid.

    Args:
        attn: (blocks, batch, heads, tokens, tokens) from :func:`vit_attention`.
        layout: the model's token layout.
        query: "cls" (the class token's row), "mean" (mean over the patch tokens' rows), or
            an int patch index (row-major over the grid).

    Returns:
        (blocks, batch, heads, h, w): attention from the query to each patch; prefix-token
        columns are left out, so a row no longer sums to 1.

    Raises:
        ValueError: an unknown query, "cls" on a model without a class token, or an index
            outside the grid.
    """
    blocks, batch, heads, tokens, _ = attn.shape
    if tokens != layout.num_tokens:
        raise ValueError(f"attention has {tokens} tokens but the layout expects {layout.num_tokens}")
    p = layout.num_prefix_tokens
    h, w = layout.grid
    if query == "cls":
        if not layout.has_class_token:
            raise ValueError("query 'cls' but the model has no class token; use 'mean' or a patch index")
        rows = attn[..., layout.prefix_names.index("CLS"), p:]
    elif query == "mean":
        rows = attn[..., p:, p:].mean(dim=-2)
    elif isinstance(query, int) and not isinstance(query, bool):
        if not 0 <= query < h * w:
            raise ValueError(f"query patch index {query} is outside the {h}×{w} grid")
        rows = attn[..., p + query, p:]
    else:
        raise ValueError(f"unknown query {query!r}: use 'cls', 'mean' or a patch index")
    return rows.reshape(blocks, batch, heads, h, w)


def vit_attention_gradients(
    model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention used in the forward pass, and the gradient of the target logit with respect to it.

    The fused (SDPA) path never materialises the attention, so it is switched off for this
    pass and restored afterwards; the softmax output is taken at ``attn_drop`` (an identity in
    eval mode), which is the tensor multiplied with V. ``torch.autograd.grad`` is used, so no
    parameter ``.grad`` is touched.

    Args:
        model: a timm model with global attention in ``model.blocks`` (ViT, EVA, BEiT) in eval mode.
        x: (batch, 3, H, W) normalised input.
        target: (batch,) class indices; default: the predicted classes.

    Returns:
        logits: (batch, classes), detached.
        attn: (blocks, batch, heads, tokens, tokens), detached.
        grads: same shape as ``attn``: ∂ logit[target] / ∂ attn.
    """
    modules = block_attention_modules(model)
    captured: list = [None] * len(modules)
    handles = []

    def store(index: int):
        def hook(_module, _args, output):
            captured[index] = output

        return hook

    try:
        for i, module in enumerate(modules):
            handles.append(module.attn_drop.register_forward_hook(store(i)))
        with torch.enable_grad(), unfused_attention(model):
            logits = model(x.detach().requires_grad_(True))
            missing = [i for i, a in enumerate(captured) if a is None]
            if missing:
                raise AttentionCaptureError(f"no attention captured for blocks {missing}")
            if target is None:
                target = logits.argmax(dim=-1)
            score = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
            grads = torch.autograd.grad(score, captured)
    finally:
        for handle in handles:
            handle.remove()
    return logits.detach(), torch.stack([a.detach() for a in captured]), torch.stack(grads)
