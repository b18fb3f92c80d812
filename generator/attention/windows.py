"""Swin Transformer attention: window capture, full-image attention with the shift undone, and a
rollout through shifted windows and patch merging.

Capture hooks read each ``WindowAttention``'s own ``qkv`` output and rebuild
``softmax(q·kᵀ·scale + relative position bias + shift mask)`` exactly as timm's unfused path,
so it works with fused attention on or off. The remaining functions are pure.

Conventions: stages and blocks are 0-based here; tokens of a stage are row-major over its grid.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention

from .capture import AttentionCaptureError
from .rollout import attention_rollout

__all__ = [
    "BlockGeometry",
    "full_attention",
    "full_attention_from_windows",
    "merge_matrix",
    "swin_blocks",
    "swin_rollout",
    "window_attention",
    "window_blocks",
    "window_query_maps",
    "window_token_index",
]

BlockKey = tuple[int, int]  # (stage, block), 0-based


@dataclass(frozen=True)
class BlockGeometry:
    """How a block tiles its stage's grid.

    Attributes:
        grid: (H, W) token grid of the stage (as seen by this block's forward pass).
        window: (wh, ww) window size.
        shift: (sh, sw) cyclic shift (0, 0 for unshifted blocks).
    """

    grid: tuple[int, int]
    window: tuple[int, int]
    shift: tuple[int, int]

    @property
    def shifted(self) -> bool:
        return any(self.shift)

    @property
    def windows(self) -> tuple[int, int]:
        return self.grid[0] // self.window[0], self.grid[1] // self.window[1]

    @property
    def padded(self) -> bool:
        return self.grid[0] % self.window[0] != 0 or self.grid[1] % self.window[1] != 0


def window_blocks(model: torch.nn.Module) -> dict[BlockKey, torch.nn.Module]:
    """Every window block by (stage, block): ``model.layers[s].blocks[b]`` with a window size, a
    shift size and an ``attn`` module (timm's Swin v1 and v2 alike); raise if the model has none."""
    stages = getattr(model, "layers", None)
    if stages is None:
        raise AttentionCaptureError(f"{type(model).__name__} has no stages of window blocks (model.layers) to hook")
    blocks = {}
    for s, stage in enumerate(stages):
        for b, block in enumerate(getattr(stage, "blocks", ())):
            if not all(hasattr(block, name) for name in ("window_size", "shift_size", "attn")):
                raise AttentionCaptureError(f"stage {s} block {b} is {type(block).__name__}, not a window block")
            blocks[(s, b)] = block
    if not blocks:
        raise AttentionCaptureError("the model has no window blocks to hook")
    return blocks


def swin_blocks(model: torch.nn.Module) -> dict[BlockKey, SwinTransformerBlock]:
    """Every Swin (v1) block by (stage, block); raise if the model has none or another kind."""
    blocks = window_blocks(model)
    for (s, b), block in blocks.items():
        if not isinstance(block, SwinTransformerBlock) or not isinstance(block.attn, WindowAttention):
            raise AttentionCaptureError(f"stage {s} block {b} is {type(block).__name__}, not a Swin block")
    return blocks


def _window_softmax(module: WindowAttention, qkv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """timm's unfused window attention from the qkv output.

    Args:
        qkv: (batch·windows, N, 3·heads·head_dim).
        mask: (windows, N, N) shift mask (0 / −100) or None.

    Returns:
        (batch·windows, heads, N, N).
    """
    b_, n, _ = qkv.shape
    q, k, _v = qkv.reshape(b_, n, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    q = q * module.scale
    scores = q @ k.transpose(-2, -1)
    scores = scores + module._get_rel_pos_bias()
    if mask is not None:
        num_win = mask.shape[0]
        scores = scores.view(-1, num_win, module.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        scores = scores.view(-1, module.num_heads, n, n)
    return scores.softmax(dim=-1)


@contextmanager
def capture_window_attention(model: torch.nn.Module, softmax_at: Callable[[torch.nn.Module], torch.nn.Module] | None = None
                             ) -> Iterator[tuple[dict, dict]]:
    """While active, forward passes fill (attention, geometry) dicts keyed by (stage, block).

    attention[key]: (batch, windows, heads, N, N). Hooks are removed on exit, also on error.

    Args:
        softmax_at: for a block's attention module, the submodule whose input is its post-softmax
            attention (Swin v2: ``attn_drop``; its attention has no fused path). None: rebuild
            ``softmax(q·kᵀ·scale + bias + mask)`` from the ``qkv`` output (Swin v1, fused or not).
    """
    blocks = swin_blocks(model) if softmax_at is None else window_blocks(model)
    attention: dict[BlockKey, torch.Tensor] = {}
    geometry: dict[BlockKey, BlockGeometry] = {}
    qkv_out: dict[BlockKey, torch.Tensor] = {}
    handles = []

    def on_block(key):
        def hook(block, args):
            _, h, w, _ = args[0].shape
            geometry[key] = BlockGeometry(grid=(h, w), window=tuple(block.window_size), shift=tuple(block.shift_size))

        return hook

    def by_window(key, probs: torch.Tensor) -> torch.Tensor:
        (h, w), (wh, ww) = geometry[key].grid, geometry[key].window
        windows = -(-h // wh) * -(-w // ww)  # timm pads the grid up to whole windows
        return probs.reshape(-1, windows, *probs.shape[1:])

    def on_qkv(key):
        def hook(_m, _args, output):
            qkv_out[key] = output.detach()

        return hook

    def on_attn(key):
        def hook(module, args, kwargs, _output):
            mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
            attention[key] = by_window(key, _window_softmax(module, qkv_out.pop(key), mask))

        return hook

    def on_softmax(key):
        def hook(_m, args):
            attention[key] = by_window(key, args[0].detach())

        return hook

    try:
        for key, block in blocks.items():
            handles.append(block.register_forward_pre_hook(on_block(key)))
            if softmax_at is None:
                handles.append(block.attn.qkv.register_forward_hook(on_qkv(key)))
                handles.append(block.attn.register_forward_hook(on_attn(key), with_kwargs=True))
            else:
                handles.append(softmax_at(block.attn).register_forward_pre_hook(on_softmax(key)))
        yield attention, geometry
    finally:
        for handle in handles:
            handle.remove()


def window_attention(
    model: torch.nn.Module, x: torch.Tensor, capture: Callable | None = None, blocks: int | None = None
) -> tuple[torch.Tensor, dict[BlockKey, torch.Tensor], dict[BlockKey, BlockGeometry]]:
    """Run ``model`` once; return logits, every block's window attention, and the blocks' geometry.

    Args:
        x: (batch, 3, H, W) normalised input.
        capture: the context manager factory that captures it (a family adapter's
            :meth:`~generator.families.ModelFamily.attention_capture`, as
            :meth:`~generator.families.ModelFamily.window_attention` passes it); default: Swin v1's.
        blocks: how many window blocks must capture (default: timm's, :func:`window_blocks`).

    Returns:
        logits: (batch, classes), identical to ``model(x)``.
        attention: (stage, block) → (batch, windows, heads, w², w²) post-softmax attention
            (windows row-major over the shifted grid, as timm partitions them).
        geometry: (stage, block) → :class:`BlockGeometry`.
    """
    with (capture or capture_window_attention)(model) as (attention, geometry):
        logits = model(x)
    if len(attention) != (len(window_blocks(model)) if blocks is None else blocks):
        raise AttentionCaptureError("some window blocks captured no attention")
    return logits, dict(attention), dict(geometry)


def window_token_index(geometry: BlockGeometry) -> torch.Tensor:
    """Original-order token index of every (window, position) slot.

    Window slot (wy, wx, py, px) covers the shifted grid cell (wy·wh + py, wx·ww + px), which
    holds the original token ((i + sh) mod H, (j + sw) mod W) because timm rolls by −shift.

    Returns:
        (windows, w²) long tensor of row-major indices into the H×W grid.

    Raises:
        ValueError: when the grid is padded to whole windows (pad tokens have no original position).
    """
    if geometry.padded:
        raise ValueError(
            f"grid {geometry.grid} is not a multiple of window {geometry.window}: timm pads it with zero tokens "
            "that have no place in the original order, so full attention is not defined here"
        )
    (h, w), (wh, ww), (sh, sw) = geometry.grid, geometry.window, geometry.shift
    nwh, nww = geometry.windows
    wy = torch.arange(nwh).view(nwh, 1, 1, 1)
    wx = torch.arange(nww).view(1, nww, 1, 1)
    py = torch.arange(wh).view(1, 1, wh, 1)
    px = torch.arange(ww).view(1, 1, 1, ww)
    rows = (wy * wh + py + sh) % h
    cols = (wx * ww + px + sw) % w
    return (rows * w + cols).reshape(nwh * nww, wh * ww)


def full_attention_from_windows(window_attn: torch.Tensor, geometry: BlockGeometry) -> torch.Tensor:
    """Assemble window attention into the full token×token matrix in original order.

    Args:
        window_attn: (batch, windows, heads, w², w²).

    Returns:
        (batch, heads, N, N) with N = H·W; entries between tokens of different windows are 0.
    """
    index = window_token_index(geometry).to(window_attn.device)  # windows, P
    batch, windows, heads, p, _ = window_attn.shape
    n = geometry.grid[0] * geometry.grid[1]
    full = window_attn.new_zeros(batch, heads, n, n)
    rows = index[:, :, None].expand(windows, p, p)
    cols = index[:, None, :].expand(windows, p, p)
    full[:, :, rows, cols] = window_attn.permute(0, 2, 1, 3, 4)
    return full


def full_attention(model: torch.nn.Module, x: torch.Tensor, stage: int, block: int) -> torch.Tensor:
    """One block's attention over the whole image, in original token order (0-based stage, block).

    Returns:
        (batch, heads, N, N), N = H·W of that stage's grid.
    """
    blocks = window_blocks(model)
    if (stage, block) not in blocks:
        raise ValueError(f"no block {block} in stage {stage}; the model has {sorted(blocks)}")
    with torch.no_grad():
        _, attention, geometry = window_attention(model, x)
    return full_attention_from_windows(attention[(stage, block)], geometry[(stage, block)])


def merge_matrix(grid: tuple[int, int]) -> torch.Tensor:
    """The patch-merging link from a stage's H×W grid to the next stage's (H/2)×(W/2) grid.

    Merged token (i, j) comes from tokens (2i + a, 2j + b), a, b ∈ {0, 1}, each with weight 1/4,
    so every row sums to 1.

    Returns:
        (H/2·W/2, H·W).
    """
    h, w = grid
    if h % 2 or w % 2:
        raise ValueError(f"grid {grid} is odd: timm pads before merging, which this rollout does not model")
    out = torch.zeros(h // 2 * (w // 2), h * w, dtype=torch.float64)
    for i in range(h // 2):
        for j in range(w // 2):
            for a in (0, 1):
                for b in (0, 1):
                    out[i * (w // 2) + j, (2 * i + a) * w + (2 * j + b)] = 0.25
    return out


def swin_rollout(
    attention: dict[BlockKey, torch.Tensor],
    geometry: dict[BlockKey, BlockGeometry],
    head_fusion: str = "mean",
    discard_ratio: float = 0.9,
    normalize: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Roll attention out through every stage, carrying it across patch merging.

    Inside a stage each block contributes (Â + I) of its full attention, with the fusion,
    discard and normalize options of :func:`generator.attention.rollout.attention_rollout` (no token is
    protected from discarding: Swin has no CLS token). Between stages the product is carried
    by :func:`merge_matrix`. The end is the mean over the final tokens, which is what the
    classifier head pools.

    Args:
        attention: (stage, block) → (batch, windows, heads, w², w²) from :func:`window_attention`.
        geometry: (stage, block) → :class:`BlockGeometry`.

    Returns:
        relevance: (batch, H₁, W₁) over the first stage's grid.
        progression: one (batch, H₁, W₁) map per stage: the same mean read after that stage.
    """
    stages = sorted({s for s, _ in attention})
    total = None  # (batch, N_s, N_1)
    progression = []
    first_grid = geometry[(stages[0], 0)].grid
    for stage in stages:
        keys = sorted(k for k in attention if k[0] == stage)
        grid = geometry[keys[0]].grid
        full = torch.stack([full_attention_from_windows(attention[k].double(), geometry[k]) for k in keys])
        stage_rollout = attention_rollout(full, head_fusion=head_fusion, discard_ratio=discard_ratio, start_block=0,
                                          normalize=normalize, keep_index=None)  # batch, N_s, N_s
        if total is None:
            total = stage_rollout
        else:
            previous_grid = geometry[(stage - 1, 0)].grid
            link = merge_matrix(previous_grid).to(total.device)
            if link.shape[0] != grid[0] * grid[1]:
                raise ValueError(f"stage {stage} grid {grid} does not follow stage {stage - 1} grid {previous_grid} by 2×2 merging")
            total = stage_rollout @ (link @ total)
        progression.append(total.mean(dim=1).reshape(-1, *first_grid))
    return progression[-1], progression


def window_query_maps(
    window_attn: torch.Tensor, geometry: BlockGeometry, query: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each window's query-patch attention, recombined into one map over the stage's grid.

    Every window contributes the attention row of its patch at in-window position ``query``
    (row, col); each key lands at its original grid position, so shifted blocks come out in
    the image's own frame.

    Args:
        window_attn: (batch, windows, heads, w², w²).
        query: (row, col) inside the window.

    Returns:
        maps: (batch, heads, H, W).
        query_positions: (windows, 2) long, (row, col) of each window's query patch on the grid.
    """
    wh, ww = geometry.window
    if not (0 <= query[0] < wh and 0 <= query[1] < ww):
        raise ValueError(f"query position {query} is outside the {wh}×{ww} window")
    index = window_token_index(geometry).to(window_attn.device)  # windows, P
    slot = query[0] * ww + query[1]
    batch, windows, heads, p, _ = window_attn.shape
    rows = window_attn[:, :, :, slot, :]  # batch, windows, heads, P
    flat = window_attn.new_zeros(batch, heads, geometry.grid[0] * geometry.grid[1])
    flat[:, :, index.reshape(-1)] = rows.permute(0, 2, 1, 3).reshape(batch, heads, windows * p)
    positions = torch.stack([index[:, slot] // geometry.grid[1], index[:, slot] % geometry.grid[1]], dim=1)
    return flat.reshape(batch, heads, *geometry.grid), positions
