"""Token norms, high-norm outlier patches and the attention they and the register tokens receive
(Darcet et al. 2024, "Vision Transformers Need Registers").

Pure compute: torch tensors in, numpy arrays out; no plotting, no files. Family adapters capture
the tensors (:meth:`generator.families.ModelFamily.attention_and_outputs`, whose hooks on the
blocks they name come from :func:`capture_block_outputs`); this module only measures them.

The outlier rule: a patch token is an outlier in a block's output when its L2 norm exceeds
``factor`` × the median L2 norm of the patch tokens of that block's output for that image (prefix
tokens such as CLS and registers are neither counted nor part of the median). Attention is paired
with the tokens a block reads: block ``b``'s attention to the patches that were outliers in its
input, the output of block ``b − 1`` (block 0 reads the embedded patches, which are not measured).

References:
    Darcet, Oquab, Mairal, Bojanowski. Vision Transformers Need Registers. ICLR 2024.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from .capture import AttentionCaptureError, TokenLayout

__all__ = ["TokenStats", "capture_block_outputs", "outlier_mask", "per_token_attention", "received_attention",
           "register_share", "token_norms", "token_stats"]


@contextmanager
def capture_block_outputs(blocks: Sequence[torch.nn.Module]) -> Iterator[dict]:
    """Context manager: while active, a forward pass stores each block's output tokens, detached,
    in ``yielded["tokens"][i]`` ((batch, tokens, channels)); hooks are removed on exit, also on error.

    Raises:
        AttentionCaptureError: ``blocks`` is empty (nothing to hook).
    """
    blocks = list(blocks)
    if not blocks:
        raise AttentionCaptureError("the model has no blocks whose output tokens could be hooked")
    state: dict = {"tokens": [None] * len(blocks)}
    handles = []

    def store(index: int):
        def hook(module, _args, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 3:
                raise AttentionCaptureError(f"block {index} ({type(module).__name__}) gave {type(output).__name__}, "
                                            "not a (batch, tokens, channels) tensor")
            state["tokens"][index] = output.detach()

        return hook

    try:
        for i, block in enumerate(blocks):
            handles.append(block.register_forward_hook(store(i)))
        yield state
    finally:
        for handle in handles:
            handle.remove()


def token_norms(tokens: torch.Tensor) -> np.ndarray:
    """L2 norm of every token over its channels.

    Args:
        tokens: (blocks, batch, tokens, channels) block outputs.

    Returns:
        (blocks, batch, tokens) float64.
    """
    return torch.linalg.vector_norm(tokens.double(), dim=-1).cpu().numpy()


def outlier_mask(patch_norms: np.ndarray, factor: float) -> np.ndarray:
    """The outlier rule: norm > ``factor`` × the median over the patches (last axis).

    Args:
        patch_norms: (..., patches) norms of the patch tokens only.
        factor: how many times the median a norm must exceed (> 1).

    Returns:
        (..., patches) bool.
    """
    median = np.median(patch_norms, axis=-1, keepdims=True)
    return patch_norms > factor * median


def received_attention(attn: torch.Tensor, layout: TokenLayout) -> dict[str, np.ndarray | None]:
    """Head-averaged attention every token receives, from the class token and from the mean patch query.

    Args:
        attn: (blocks, batch, heads, tokens, tokens) post-softmax attention (rows sum to 1).
        layout: the model's token layout.

    Returns:
        ``"cls"``: (blocks, batch, tokens) the class token's row, or None without a class token;
        ``"patches"``: (blocks, batch, tokens) the mean over the patch tokens' rows. Rows sum to 1.
    """
    mean = attn.double().mean(dim=2)  # blocks, batch, tokens, tokens
    cls = layout.class_token_index
    return {"cls": mean[:, :, cls, :].cpu().numpy() if cls is not None else None,
            "patches": mean[:, :, layout.num_prefix_tokens:, :].mean(dim=-2).cpu().numpy()}


def register_share(rows: np.ndarray, layout: TokenLayout) -> np.ndarray | None:
    """Share of each attention row that goes to the register tokens.

    Args:
        rows: (..., tokens) attention rows (from :func:`received_attention`).

    Returns:
        (...) the sum over the register columns; None for a model without registers.
    """
    columns = [i for i, name in enumerate(layout.prefix_names) if name.startswith("REG")]
    return rows[..., columns].sum(axis=-1) if columns else None


def per_token_attention(patch_rows: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Attention to the outlier patches against the other patches.

    Args:
        patch_rows: (..., patches) attention received by each patch.
        mask: (..., patches) bool, the outliers.

    Returns:
        per_outlier: (...) mean attention received per outlier patch (NaN where there is none);
        per_other: (...) mean per other patch (NaN where every patch is an outlier);
        total: (...) the summed attention on the outliers (0 where there is none).
    """
    count = mask.sum(axis=-1)
    on_outliers = np.where(mask, patch_rows, 0.0).sum(axis=-1)
    on_others = np.where(mask, 0.0, patch_rows).sum(axis=-1)
    others = mask.shape[-1] - count
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(count > 0, on_outliers / count, np.nan), np.where(others > 0, on_others / others, np.nan),
                on_outliers)


@dataclass(frozen=True)
class TokenStats:
    """What :func:`token_stats` measures for a batch of images.

    Attributes:
        norms: (blocks, batch, tokens) L2 norm of every output token, prefix tokens first.
        median_patch_norm: (blocks, batch) median over the patch tokens.
        outliers: (blocks, batch, patches) bool, the outlier rule on each block's output.
        factor: the rule's factor.
        attention: per query (``"cls"`` when the model has a class token, ``"patches"`` always) a
            dict of (blocks, batch) arrays for block ``b``'s attention to the outliers of its input
            (block ``b − 1``'s output; NaN in block 0): ``per_outlier``, ``per_other``, ``total``
            (see :func:`per_token_attention`).
        register_share: per query, (blocks, batch) share of block ``b``'s attention on the
            registers; empty for a model without registers.
    """

    norms: np.ndarray
    median_patch_norm: np.ndarray
    outliers: np.ndarray
    factor: float
    attention: dict[str, dict[str, np.ndarray]]
    register_share: dict[str, np.ndarray]


def token_stats(tokens: torch.Tensor, attn: torch.Tensor, layout: TokenLayout, factor: float) -> TokenStats:
    """Norms, outliers, and the attention outliers and registers receive, block by block.

    Args:
        tokens: (blocks, batch, tokens, channels) every block's output.
        attn: (blocks, batch, heads, tokens, tokens) every block's attention.
        layout: the model's token layout (prefix tokens, patch grid).
        factor: the outlier rule's factor.

    Raises:
        ValueError: the token counts of ``tokens``, ``attn`` and ``layout`` disagree.
    """
    if tokens.shape[:3] != attn.shape[:2] + attn.shape[-1:] or tokens.shape[2] != layout.num_tokens:
        raise ValueError(f"block outputs {tuple(tokens.shape)}, attention {tuple(attn.shape)} and the layout's "
                         f"{layout.num_tokens} tokens disagree")
    p = layout.num_prefix_tokens
    norms = token_norms(tokens)
    outliers = outlier_mask(norms[..., p:], factor)
    rows = received_attention(attn, layout)
    attention, shares = {}, {}
    for query, row in rows.items():
        if row is None:
            continue
        # block b reads block b − 1's output: shift the masks one block on; block 0's input is not measured
        read = np.concatenate([np.zeros_like(outliers[:1]), outliers[:-1]])
        per_outlier, per_other, total = per_token_attention(row[..., p:], read)
        for values in (per_outlier, per_other, total):
            values[0] = np.nan
        attention[query] = {"per_outlier": per_outlier, "per_other": per_other, "total": total}
        share = register_share(row, layout)
        if share is not None:
            shares[query] = share
    return TokenStats(norms=norms, median_patch_norm=np.median(norms[..., p:], axis=-1), outliers=outliers,
                      factor=float(factor), attention=attention, register_share=shares)
