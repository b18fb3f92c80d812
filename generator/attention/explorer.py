"""Attention explorer data: every block's attention for one image × model, packed compactly for
the browser (``generator/site/assets/explorer.js``). Pure: arrays in, bytes and dicts out; no plotting
and no file I/O (:mod:`generator.site.explorer` writes the files).

Quantisation ("sqrt-uint8", one scheme for every block)
-------------------------------------------------------
Each attention row ``a`` (one head, one query; values ≥ 0) is stored as

* ``m16``: its maximum, as IEEE float16, **rounded up** (the smallest float16 ≥ max(a)), so
  ``a / m16 ≤ 1`` always;
* ``code[k] = round(255 · sqrt(a[k] / m16))`` as uint8.

Decoding: ``â[k] = (code[k] / 255)² · m16``.

Error bound, per element: with ``s = sqrt(a/m16)`` and ``t = code/255`` we have ``|t − s| ≤ 1/510``
(rounding), so ``|â − a| = m16·|t − s|·(t + s) ≤ (m16/510)·min(2, 2s + 1/510)``. Hence

    |â − a| ≤ m16 / 255   for every element, and ≤ (m16/510)·(2·sqrt(a/m16) + 1/510) for a small a,

so small values are kept with much finer absolute precision than a linear code would give.
In terms of the exact row maximum m: m16 < m·(1 + 2⁻¹⁰) in float16's normal range
(m ≥ 2⁻¹⁴; a softmax row's maximum is ≥ 1/N, so N ≤ 16384 is always normal), i.e.
``|â − a| ≤ m·(1 + 2⁻¹⁰)/255``. :func:`quantisation_error_bound` returns the bound.

Block layout (little-endian, no header; shapes are in the manifest)
-------------------------------------------------------------------
dense (default), H heads, N tokens::

    offset 0        float16[H][N]      m16 per (head, query)
    offset 2·H·N    uint8[H][N][N]     codes, head × query × key

top-k (``top_k=k``; keys not kept decode to 0)::

    offset 0                float16[H][N]      m16 per (head, query) (maximum over all keys)
    offset 2·H·N            uint16[H][N][k]    kept key indices, ascending
    offset 2·H·N + 2·H·N·k  uint8[H][N][k]     codes of the kept keys

Token order: ViT: the prefix tokens (CLS, …) first, then the patches row-major over the grid.
Swin: the block's stage grid row-major, in the image's own frame (the cyclic shift undone), from
:func:`generator.attention.windows.full_attention_from_windows`.

Rollout ("rollout up to block b", computed by the browser from the decoded blocks)
---------------------------------------------------------------------------------
``M_l = rownorm(mean_heads(A_l) + I)``, ``R_b = M_b · L · M_{b−1} · … · M_0``, where ``L`` is
:func:`generator.attention.windows.merge_matrix` wherever the grid shrinks between two blocks (Swin patch
merging) and the identity otherwise. No entries are discarded and every block from 0 is used:
this equals :func:`generator.attention.rollout.attention_rollout` with ``head_fusion="mean",
discard_ratio=0, start_block=0, normalize=True`` (ViT; per stage for Swin). The query's row of
``R_b`` is drawn over the first block's grid. :func:`explorer_rollout` is the reference.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..families import family_of
from .rollout import attention_rollout
from .windows import full_attention_from_windows, merge_matrix

__all__ = [
    "FORMAT_VERSION",
    "QUANT_SCHEME",
    "ExplorerBlock",
    "ExplorerData",
    "block_nbytes",
    "decode_block",
    "dequantise_rows",
    "encode_block",
    "explorer_files",
    "explorer_manifest",
    "explorer_rollout",
    "float16_ceil",
    "quantisation_error_bound",
    "quantise_rows",
    "swin_explorer_data",
    "vit_explorer_data",
]

FORMAT_VERSION = 1
QUANT_SCHEME = "sqrt-uint8"
ROLLOUT = {"head_fusion": "mean", "add_identity": True, "normalize": True, "discard_ratio": 0.0, "start_block": 0}


# ----------------------------------------------------------------------------------------------
# quantisation


def float16_ceil(x: np.ndarray) -> np.ndarray:
    """The smallest float16 ≥ each element of ``x`` (x ≥ 0, finite, ≤ 65504).

    Args:
        x: (...,) float array.

    Returns:
        (...,) float16 array.
    """
    x = np.asarray(x, dtype=np.float64)
    if np.any(x < 0) or not np.all(np.isfinite(x)) or np.any(x > 65504.0):
        raise ValueError("row maxima must be finite, ≥ 0 and ≤ 65504 to be stored as float16")
    h = x.astype(np.float16)
    low = h.astype(np.float64) < x
    h[low] = np.nextafter(h[low], np.float16(np.inf))
    return h


def quantise_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Square-root uint8 codes with float16 row maxima (the module's "sqrt-uint8" scheme).

    Args:
        rows: (..., K) non-negative values; each slice along the last axis is one row.

    Returns:
        codes: (..., K) uint8, ``round(255·sqrt(rows / m16))``.
        maxima: (...,) float16 ``m16``, each row's maximum rounded up to float16.

    Raises:
        ValueError: a negative or non-finite value.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size and (rows.min() < 0 or not np.all(np.isfinite(rows))):
        raise ValueError("attention rows must be finite and ≥ 0")
    maxima = float16_ceil(rows.max(axis=-1) if rows.shape[-1] else np.zeros(rows.shape[:-1]))
    m = maxima.astype(np.float64)[..., None]
    safe = np.where(m > 0, m, 1.0)
    codes = np.rint(255.0 * np.sqrt(np.clip(rows / safe, 0.0, 1.0)))
    codes = np.where(m > 0, codes, 0.0)
    return codes.astype(np.uint8), maxima


def dequantise_rows(codes: np.ndarray, maxima: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantise_rows`: ``(codes/255)² · maxima``.

    Args:
        codes: (..., K) uint8.
        maxima: (...,) float16.

    Returns:
        (..., K) float64.
    """
    t = codes.astype(np.float64) / 255.0
    return t * t * maxima.astype(np.float64)[..., None]


def quantisation_error_bound(maxima: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """The largest possible |decoded − exact| of the "sqrt-uint8" scheme.

    Args:
        maxima: (...,) the stored (float16, rounded-up) row maxima ``m16``.
        values: optional (..., K) exact values; when given, the per-element bound
            ``(m16/510)·min(2, 2·sqrt(a/m16) + 1/510)`` is returned, else the row bound ``m16/255``.

    Returns:
        (...,) or (..., K) float64 bound.
    """
    m = np.asarray(maxima, dtype=np.float64)
    if values is None:
        return m / 255.0
    m = m[..., None]
    s = np.sqrt(np.clip(np.asarray(values, dtype=np.float64) / np.where(m > 0, m, 1.0), 0.0, 1.0))
    return (m / 510.0) * np.minimum(2.0, 2.0 * s + 1.0 / 510.0)


def block_nbytes(heads: int, tokens: int, top_k: int | None = None) -> int:
    """Size in bytes of one encoded block (before base64)."""
    if top_k is None:
        return 2 * heads * tokens + heads * tokens * tokens
    return 2 * heads * tokens + 3 * heads * tokens * top_k


def encode_block(attn: np.ndarray, top_k: int | None = None) -> bytes:
    """Pack one block's attention in the module's block layout.

    Args:
        attn: (heads, N, N) attention, rows over the last axis, values ≥ 0.
        top_k: keep only each row's k largest keys (ties: lower key index first); None: dense.

    Returns:
        ``block_nbytes(heads, N, top_k)`` bytes.
    """
    attn = np.asarray(attn, dtype=np.float64)
    if attn.ndim != 3 or attn.shape[1] != attn.shape[2]:
        raise ValueError(f"attn must be (heads, N, N), got shape {attn.shape}")
    heads, n, _ = attn.shape
    codes, maxima = quantise_rows(attn)
    head = maxima.astype("<f2").tobytes()
    if top_k is None:
        return head + codes.tobytes()
    if not 1 <= top_k <= n or n > 65535:
        raise ValueError(f"top_k must be in [1, {n}] and N ≤ 65535, got top_k={top_k}, N={n}")
    order = np.argsort(-attn, axis=-1, kind="stable")[..., :top_k]
    keep = np.sort(order, axis=-1)  # heads, N, k ascending key index
    kept_codes = np.take_along_axis(codes, keep, axis=-1)
    return head + keep.astype("<u2").tobytes() + kept_codes.astype(np.uint8).tobytes()


def decode_block(data: bytes, heads: int, tokens: int, top_k: int | None = None) -> np.ndarray:
    """Unpack :func:`encode_block`'s bytes.

    Returns:
        (heads, N, N) float64; keys dropped by top-k are 0.
    """
    hn = heads * tokens
    if len(data) != block_nbytes(heads, tokens, top_k):
        raise ValueError(f"block has {len(data)} bytes, expected {block_nbytes(heads, tokens, top_k)}")
    maxima = np.frombuffer(data, dtype="<f2", count=hn).reshape(heads, tokens)
    if top_k is None:
        codes = np.frombuffer(data, dtype=np.uint8, offset=2 * hn).reshape(heads, tokens, tokens)
        return dequantise_rows(codes, maxima)
    keys = np.frombuffer(data, dtype="<u2", offset=2 * hn, count=hn * top_k).reshape(heads, tokens, top_k)
    codes = np.frombuffer(data, dtype=np.uint8, offset=2 * hn + 2 * hn * top_k).reshape(heads, tokens, top_k)
    out = np.zeros((heads, tokens, tokens))
    np.put_along_axis(out, keys.astype(np.int64), dequantise_rows(codes, maxima), axis=-1)
    return out


# ----------------------------------------------------------------------------------------------
# capture


@dataclass(frozen=True)
class ExplorerBlock:
    """One block's attention over the whole image.

    Attributes:
        attn: (heads, N, N) float32 post-softmax attention, N = prefix + grid h·w (ViT) or
            grid h·w (Swin, original order, shift undone).
        grid: (h, w) token grid of this block.
        stage: Swin stage (0-based); 0 for ViT.
        index_in_stage: block index inside its stage (0-based).
        window: Swin window size (wh, ww); None for ViT.
        shift: Swin cyclic shift (sh, sw); None for ViT.
    """

    attn: np.ndarray
    grid: tuple[int, int]
    stage: int = 0
    index_in_stage: int = 0
    window: tuple[int, int] | None = None
    shift: tuple[int, int] | None = None


@dataclass(frozen=True)
class ExplorerData:
    """Every block's attention for one image × model, plus what the page needs to draw it.

    Attributes:
        family: the model's family adapter name (:mod:`generator.families`).
        blocks: in forward order.
        prefix_names: the ViT's leading non-patch tokens ("CLS", …); () for Swin.
        image_size: (H, W) of the model input in pixels.
        patch_size: (ph, pw) of the patch embedding.
        meta: JSON-able extras copied into the manifest (e.g. the top prediction).
    """

    family: str
    blocks: tuple[ExplorerBlock, ...]
    prefix_names: tuple[str, ...]
    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict)


def vit_explorer_data(model: torch.nn.Module, x: torch.Tensor, index: int = 0) -> ExplorerData:
    """Capture a timm ViT's attention for item ``index`` of the batch ``x``.

    Args:
        model: a timm VisionTransformer in eval mode.
        x: (batch, 3, H, W) normalised input.
        index: which batch item to export.

    Returns:
        :class:`ExplorerData` with one (heads, N, N) block per transformer block.
    """
    family = family_of(model)
    layout = family.token_layout(model)
    with torch.inference_mode():
        _, attn = family.attention(model, x)  # blocks, batch, heads, N, N
    item = attn[:, index].float().cpu().numpy()
    blocks = tuple(ExplorerBlock(attn=item[b], grid=layout.grid, index_in_stage=b) for b in range(item.shape[0]))
    return ExplorerData(family=family_of(model).name, blocks=blocks, prefix_names=layout.prefix_names,
                        image_size=(int(x.shape[-2]), int(x.shape[-1])),
                        patch_size=family_of(model).patch_size(model))


def swin_explorer_data(model: torch.nn.Module, x: torch.Tensor, index: int = 0) -> ExplorerData:
    """Capture a timm Swin's full-image attention per block (shift undone) for item ``index``.

    Raises:
        ValueError: a stage grid that is not a whole number of windows (timm pads it).
    """
    with torch.inference_mode():
        _, attention, geometry = family_of(model).window_attention(model, x)
    blocks = []
    for key in sorted(attention):
        g = geometry[key]
        full = full_attention_from_windows(attention[key][index : index + 1], g)  # 1, heads, N, N
        blocks.append(ExplorerBlock(attn=full[0].float().cpu().numpy(), grid=tuple(g.grid), stage=key[0],
                                    index_in_stage=key[1], window=tuple(g.window), shift=tuple(g.shift)))
    return ExplorerData(family=family_of(model).name, blocks=tuple(blocks), prefix_names=(),
                        image_size=(int(x.shape[-2]), int(x.shape[-1])),
                        patch_size=family_of(model).patch_size(model))


# ----------------------------------------------------------------------------------------------
# rollout reference


def explorer_rollout(blocks: Sequence[np.ndarray], grids: Sequence[tuple[int, int]], upto: int) -> np.ndarray:
    """The explorer's "rollout up to block ``upto``" matrix (see the module docstring).

    Args:
        blocks: per block (heads, N_l, N_l) attention (exact or decoded).
        grids: per block (h, w) grid; the grid may only shrink by 2×2 patch merging.
        upto: last block included (0-based).

    Returns:
        (N_upto, N_0) float64: row q is the rollout of query token q of block ``upto`` over the
        first block's tokens.
    """
    total = None
    start = 0
    for b in range(upto + 1):
        if b == upto or grids[b + 1] != grids[b]:
            run = torch.stack([torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in blocks[start : b + 1]])
            stage = attention_rollout(run[:, None], head_fusion="mean", discard_ratio=0.0, start_block=0,
                                      normalize=True, keep_index=None)[0]
            if total is None:
                total = stage
            else:
                link = merge_matrix(tuple(grids[start - 1]))
                if link.shape[0] != stage.shape[0]:
                    raise ValueError(f"grid {grids[start]} does not follow {grids[start - 1]} by 2×2 merging")
                total = stage @ (link @ total)
            start = b + 1
    return total.numpy()


# ----------------------------------------------------------------------------------------------
# export


def explorer_manifest(data: ExplorerData, key: str, files: Sequence[str], nbytes: Sequence[int],
                      image_file: str, top_k: int | None = None) -> dict[str, Any]:
    """The manifest the browser reads (also written as ``manifest.json``).

    Each block entry holds its own ``top_k`` (``min(top_k, tokens)``, or null when dense).
    """
    blocks = []
    for b, (blk, name, size) in enumerate(zip(data.blocks, files, nbytes)):
        heads, n, _ = blk.attn.shape
        entry = {"index": b, "file": name, "bytes": int(size), "heads": int(heads), "tokens": int(n),
                 "top_k": None if top_k is None else min(int(top_k), int(n)),
                 "grid": list(blk.grid), "stage": blk.stage, "block_in_stage": blk.index_in_stage}
        if blk.window is not None:
            entry["window"] = list(blk.window)
            entry["shift"] = list(blk.shift or (0, 0))
        blocks.append(entry)
    return {
        "format": "vit-explorer",
        "version": FORMAT_VERSION,
        "key": key,
        "family": data.family,
        "image_file": image_file,
        "image_size": list(data.image_size),
        "patch_size": list(data.patch_size),
        "grid": list(data.blocks[0].grid),
        "prefix_tokens": list(data.prefix_names),
        "quantisation": {
            "scheme": QUANT_SCHEME,
            "decode": "value = (code / 255)^2 * rowmax",
            "rowmax": "float16 little-endian, rounded up",
            "layout": ("float16 rowmax[heads][tokens], then uint8 code[heads][tokens][tokens]" if top_k is None else
                       "float16 rowmax[heads][tokens], uint16 key[heads][tokens][top_k], uint8 code[heads][tokens][top_k]"),
            "top_k": top_k,
            "error_bound": "|decoded - exact| <= rowmax / 255",
            "encoding": "base64 in a .js file: VitExplorer.register(key + '/b' + index, base64)",
        },
        "rollout": dict(ROLLOUT),
        "blocks": blocks,
        "meta": data.meta,
    }


def _js_string(value: str) -> str:
    # JSON is valid JS; escape '<' so the text can never close a <script> element
    return json.dumps(value, ensure_ascii=True).replace("<", "\\u003c")


def explorer_files(data: ExplorerData, key: str, image_png: bytes, top_k: int | None = None,
                   binary: bool = False) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Every file of one explorer, as bytes (no I/O).

    Args:
        data: the captured attention.
        key: registry key, unique per site (e.g. ``"<model>--<image>"``); block b registers as
            ``f"{key}/b{b}"``.
        image_png: the model-input view as PNG bytes (written as ``image.png``).
        top_k: sparse export (see the module docstring); None: dense.
        binary: also return the raw blocks as ``block-XX.bin`` (not needed by the page).

    Returns:
        files: name → bytes: ``manifest.json``, ``manifest.js``, ``image.png``, ``block-XX.js``
            (and ``block-XX.bin``).
        manifest: the manifest dict.
    """
    files: dict[str, bytes] = {"image.png": image_png}
    names, sizes = [], []
    width = max(2, len(str(len(data.blocks) - 1)))
    for b, blk in enumerate(data.blocks):
        k = None if top_k is None else min(top_k, blk.attn.shape[-1])
        raw = encode_block(blk.attn, k)
        stem = f"block-{b:0{width}d}"
        payload = base64.b64encode(raw).decode("ascii")
        files[f"{stem}.js"] = f"VitExplorer.register({_js_string(f'{key}/b{b}')}, \"{payload}\");\n".encode("ascii")
        if binary:
            files[f"{stem}.bin"] = raw
        names.append(f"{stem}.js")
        sizes.append(len(raw))
    manifest = explorer_manifest(data, key, names, sizes, "image.png", top_k)
    files["manifest.json"] = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    files["manifest.js"] = (f"VitExplorer.registerManifest({_js_string(key)}, "
                            f"{json.dumps(manifest, ensure_ascii=True).replace('<', chr(92) + 'u003c')});\n").encode("ascii")
    return files, manifest
