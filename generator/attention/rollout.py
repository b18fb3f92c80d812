"""Attention rollout (Abnar & Zuidema, 2020) and gradient-weighted rollout (Chefer et al., 2021).

Pure tensor functions: no hooks, no I/O, no plotting. Capture lives in
:mod:`generator.attention.capture`.

The study's choices are the defaults: heads fused by their mean, the lowest 90 % of each
fused matrix discarded, the first block skipped, rows not re-normalised.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = [
    "FUSIONS",
    "attention_rollout",
    "discard_lowest",
    "fuse_heads",
    "gradient_rollout",
    "rollout_mask",
    "rollout_progression",
]

Fusion = Literal["mean", "max", "min"]
FUSIONS: tuple[str, ...] = ("mean", "max", "min")


def fuse_heads(attn: torch.Tensor, head_fusion: Fusion = "mean") -> torch.Tensor:
    """Fuse the head axis.

    Args:
        attn: (batch, heads, tokens, tokens).
        head_fusion: "mean", "max" or "min".

    Returns:
        (batch, tokens, tokens).
    """
    if head_fusion == "mean":
        return attn.mean(dim=1)
    if head_fusion == "max":
        return attn.amax(dim=1)
    if head_fusion == "min":
        return attn.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {FUSIONS}, got {head_fusion!r}")


def discard_lowest(fused: torch.Tensor, discard_ratio: float, keep_index: int | None = 0) -> torch.Tensor:
    """Zero the smallest ⌊discard_ratio·tokens²⌋ entries of each sample's matrix.

    The entry (keep_index, keep_index), the CLS-to-CLS attention, is never discarded: if it is
    among the smallest it stays, and no other entry is discarded in its place. Ties are broken
    by position (a stable sort), so the result is deterministic.

    Args:
        fused: (batch, tokens, tokens).
        discard_ratio: in [0, 1).
        keep_index: the protected token, or None.

    Returns:
        (batch, tokens, tokens), a new tensor.
    """
    batch, tokens, _ = fused.shape
    count = int(discard_ratio * tokens * tokens)
    if count == 0:
        return fused.clone()
    flat = fused.reshape(batch, tokens * tokens)
    lowest = torch.argsort(flat, dim=-1, stable=True)[:, :count]
    drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
    if keep_index is not None:
        drop[:, keep_index * tokens + keep_index] = False
    return flat.masked_fill(drop, 0.0).reshape(batch, tokens, tokens)


def _check(attn: torch.Tensor, head_fusion: str, discard_ratio: float, start_block: int) -> None:
    if attn.dim() != 5 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be (blocks, batch, heads, tokens, tokens), got shape {tuple(attn.shape)}")
    if head_fusion not in FUSIONS:
        raise ValueError(f"head_fusion must be one of {FUSIONS}, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    blocks = attn.shape[0]
    if isinstance(start_block, bool) or not isinstance(start_block, int) or not 0 <= start_block < blocks:
        raise ValueError(f"start_block must be an int in [0, {blocks - 1}] for {blocks} blocks, got {start_block!r}")


def _rollout_steps(attn, head_fusion, discard_ratio, start_block, normalize, keep_index):
    """Yield (block index, R after that block); R: (batch, tokens, tokens)."""
    _check(attn, head_fusion, discard_ratio, start_block)
    _, batch, _, tokens, _ = attn.shape
    eye = torch.eye(tokens, dtype=attn.dtype, device=attn.device)
    rollout = eye.expand(batch, tokens, tokens)
    for block in range(start_block, attn.shape[0]):
        fused = discard_lowest(fuse_heads(attn[block], head_fusion), discard_ratio, keep_index)
        step = fused + eye
        if normalize:
            step = step / step.sum(dim=-1, keepdim=True)
        rollout = step @ rollout
        yield block, rollout


def attention_rollout(
    attn: torch.Tensor,
    head_fusion: Fusion = "mean",
    discard_ratio: float = 0.9,
    start_block: int = 1,
    normalize: bool = False,
    keep_index: int | None = 0,
) -> torch.Tensor:
    """Roll attention out over blocks: R_l = (Â_l + I)·R_{l−1}, from ``start_block`` to the last.

    Args:
        attn: (blocks, batch, heads, tokens, tokens) post-softmax attention.
        head_fusion: how heads are fused into Â_l: "mean", "max" or "min".
        discard_ratio: fraction of each fused matrix's entries zeroed (smallest first), in [0, 1).
        start_block: first block included (the study skips block 0).
        normalize: divide each row of (Â_l + I) by its sum before multiplying.
        keep_index: token whose self-attention entry is never discarded (the CLS token).

    Returns:
        (batch, tokens, tokens) rollout matrix R.

    Raises:
        ValueError: naming ``head_fusion``, ``discard_ratio`` or ``start_block`` when invalid.
    """
    result = None
    for _, result in _rollout_steps(attn, head_fusion, discard_ratio, start_block, normalize, keep_index):
        pass
    return result


def rollout_mask(rollout: torch.Tensor, grid: tuple[int, int], prefix_tokens: int = 1,
                 query: int | Literal["mean"] = 0) -> torch.Tensor:
    """The query token's row (the CLS row by default) over the patch tokens, on the patch grid.

    Args:
        rollout: (batch, tokens, tokens).
        grid: (h, w) patch grid, taken from the model (never assumed square).
        prefix_tokens: leading non-patch tokens whose columns are dropped.
        query: row to read, or "mean": the mean of the patch tokens' rows (a model without a class token).

    Returns:
        (batch, h, w).
    """
    h, w = grid
    batch, tokens, _ = rollout.shape
    if tokens != prefix_tokens + h * w:
        raise ValueError(f"rollout has {tokens} tokens; grid {h}×{w} with {prefix_tokens} prefix tokens needs "
                         f"{prefix_tokens + h * w}")
    rows = rollout[:, prefix_tokens:, prefix_tokens:].mean(dim=1) if query == "mean" else rollout[:, query, prefix_tokens:]
    return rows.reshape(batch, h, w)


def rollout_progression(
    attn: torch.Tensor,
    grid: tuple[int, int],
    prefix_tokens: int = 1,
    head_fusion: Fusion = "mean",
    discard_ratio: float = 0.9,
    start_block: int = 1,
    normalize: bool = False,
    keep_index: int | None = 0,
    query: int | Literal["mean"] = 0,
) -> torch.Tensor:
    """The rollout mask after each block from ``start_block`` on.

    Args:
        attn: (blocks, batch, heads, tokens, tokens).
        query: the row read (:func:`rollout_mask`).

    Returns:
        (blocks − start_block, batch, h, w); the last entry equals the full rollout's mask.
    """
    masks = [
        rollout_mask(r, grid, prefix_tokens, query)
        for _, r in _rollout_steps(attn, head_fusion, discard_ratio, start_block, normalize, keep_index)
    ]
    return torch.stack(masks)


def gradient_rollout(attn: torch.Tensor, grads: torch.Tensor, start_block: int = 0) -> torch.Tensor:
    """Gradient-weighted rollout (Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model Explainability").

    Each block's heads are weighted by the positive part of ∂y_c/∂A ⊙ A and averaged:
    Ā_l = E_h[(∇A_l ⊙ A_l)⁺]; then R_l = (Ā_l + I)·R_{l−1}, starting from R = I.

    Args:
        attn: (blocks, batch, heads, tokens, tokens) attention used in the forward pass.
        grads: same shape, the gradient of the target logit with respect to ``attn``.
        start_block: first block included.

    Returns:
        (batch, tokens, tokens).
    """
    if attn.shape != grads.shape:
        raise ValueError(f"attn {tuple(attn.shape)} and grads {tuple(grads.shape)} differ in shape")
    _check(attn, "mean", 0.0, start_block)
    _, batch, _, tokens, _ = attn.shape
    eye = torch.eye(tokens, dtype=attn.dtype, device=attn.device)
    rollout = eye.expand(batch, tokens, tokens)
    for block in range(start_block, attn.shape[0]):
        weighted = (grads[block] * attn[block]).clamp(min=0).mean(dim=1)
        rollout = (weighted + eye) @ rollout
    return rollout
