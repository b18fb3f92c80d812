"""Numbers that describe how attention behaves: per block, per head, per image, and over a set.

Pure compute (torch and numpy only): no plotting, no file I/O. The two ``*_attention_stats``
functions run a model once through the project's capture code; every other function works on
tensors or arrays.

Conventions
-----------
Rows are renormalised over the keys a query may really attend to, and every statistic of a
row is taken over those keys only:

* ViT: **patch-to-patch only**. Prefix tokens (CLS, distillation, registers) are dropped as
  queries and as keys, and each patch query's row is renormalised over the patch keys, so
  distances, entropies, positional scores and block similarities describe how patches mix
  with patches. The CLS row is used on its own for :func:`cls_concentration`, renormalised
  over the patch keys as well. The grid comes from the model's :class:`TokenLayout`, never
  from √N.
* Swin: **inside windows, in window coordinates**. A window's slot (py, px) holds a token
  whose original position differs from the slot's by the cyclic shift only, so for two tokens
  the shift allows to attend to each other the in-window offset *is* their offset in the
  original (unshifted) image; statistics are therefore invariant to undoing the shift.
  Pairs across the wrap-around of a shifted window sit next to each other in the window but
  far apart in the image; timm masks them with −100 (weight ≈ e⁻¹⁰⁰), so here they are
  excluded (:func:`window_allowed`) rather than given either their tiny weight or a
  misleading distance; rows are renormalised over the allowed keys, and a query's entropy is
  normalised by the log of *its* number of allowed keys.

Distances are Euclidean between grid cell centres, in grid units ("patches") and in input
pixels (grid units scaled by the pixel size of a cell along each axis, so non-square patches
are handled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .capture import TokenLayout
from ..analysis.bootstrap import Interval, bootstrap_interval
from .windows import BlockGeometry

__all__ = [
    "KERNEL_CLASSES",
    "Interval",
    "KernelMeasures",
    "KernelThresholds",
    "SwinAttentionStats",
    "SwinBlockStats",
    "VitAttentionStats",
    "bias_attention",
    "bias_correlation",
    "bootstrap_interval",
    "classify_kernel",
    "cls_concentration",
    "grid_distances",
    "kernel_measures",
    "offset_kernel",
    "pearson",
    "positional_score",
    "renormalise",
    "row_distance",
    "row_entropy",
    "swin_attention_stats",
    "swin_block_stats",
    "uniform_mean_distance",
    "vit_attention_stats",
    "vit_stats_from_attention",
    "window_allowed",
    "window_distances",
    "window_shift_mask",
]

#: A map whose variance is below this fraction of its raw second moment is constant (Pearson undefined).
_CONSTANT = 1e-20

#: timm's additive value for pairs across a shifted window's wrap-around.
SHIFT_MASK_VALUE = -100.0


# ----------------------------------------------------------------------------- geometry


def _grid_coordinates(grid: tuple[int, int]) -> torch.Tensor:
    """(h·w, 2) float64 (row, col) of every cell, row-major."""
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def grid_distances(grid: tuple[int, int], spacing: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """Euclidean distance between every pair of cells of a grid.

    Args:
        grid: (h, w) cells.
        spacing: size of one cell along (rows, cols); (1, 1) gives grid units, the patch size
            gives pixels.

    Returns:
        (h·w, h·w) float64, row-major cell order.
    """
    coords = _grid_coordinates(grid) * torch.tensor(spacing, dtype=torch.float64)
    return torch.cdist(coords, coords)


def uniform_mean_distance(grid: tuple[int, int], spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Mean attention distance of a head that spreads every query uniformly over the whole grid
    (self included): the mean of :func:`grid_distances`. The natural "global" reference value."""
    return float(grid_distances(grid, spacing).mean())


def window_distances(window: tuple[int, int], spacing: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """(wh·ww, wh·ww) float64 distances between the slots of one window (see :func:`grid_distances`)."""
    return grid_distances(window, spacing)


def _wrapped(size: int, window: int, shift: int) -> torch.Tensor:
    """(size,) bool: whether the shifted-grid row (or column) holds a token that wrapped around."""
    return torch.arange(size) + shift >= size if shift else torch.zeros(size, dtype=torch.bool)


def window_allowed(geometry: BlockGeometry) -> torch.Tensor:
    """Which (query, key) slot pairs of each window may attend to each other.

    Two slots of one window are allowed when both or neither of them wrapped around in the
    cyclic shift (along rows and along columns): exactly the pairs timm's shift mask leaves
    at 0 (the regions ``[0, H−wh)``, ``[H−wh, H−sh)``, ``[H−sh, H)`` meet window borders only
    at ``H−sh``). For these pairs the in-window offset equals the offset in the original image.

    Returns:
        (windows, wh·ww, wh·ww) bool; all True for an unshifted block.

    Raises:
        ValueError: when the grid is padded to whole windows (pad tokens have no position).
    """
    if geometry.padded:
        raise ValueError(f"grid {geometry.grid} is not a multiple of window {geometry.window}: padded grids are not supported")
    (h, w), (wh, ww), (sh, sw) = geometry.grid, geometry.window, geometry.shift
    row_wrap = _wrapped(h, wh, sh).view(h // wh, wh)  # window row, slot row
    col_wrap = _wrapped(w, ww, sw).view(w // ww, ww)
    label = row_wrap[:, None, :, None].long() * 2 + col_wrap[None, :, None, :].long()  # nWh, nWw, wh, ww
    label = label.reshape(-1, wh * ww)  # windows, P
    return label[:, :, None] == label[:, None, :]


def window_shift_mask(geometry: BlockGeometry) -> torch.Tensor | None:
    """timm's additive shift mask rebuilt from the geometry: 0 where allowed, −100 elsewhere.

    Returns:
        (windows, wh·ww, wh·ww) float32, or None for an unshifted block (timm passes no mask).
    """
    if not geometry.shifted:
        return None
    allowed = window_allowed(geometry)
    return torch.where(allowed, 0.0, SHIFT_MASK_VALUE).to(torch.float32)


def _offset_index(window: tuple[int, int]) -> torch.Tensor:
    """(P, P) long: bin of the offset key − query, (dy + wh − 1)·(2ww − 1) + (dx + ww − 1)."""
    wh, ww = window
    coords = _grid_coordinates(window).long()
    d = coords[None, :, :] - coords[:, None, :]  # query, key, 2
    return (d[..., 0] + wh - 1) * (2 * ww - 1) + (d[..., 1] + ww - 1)


# ----------------------------------------------------------------------------- row statistics


def renormalise(attn: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Zero the disallowed keys and rescale each row to sum to 1.

    Args:
        attn: (..., Q, K) non-negative weights.
        allowed: bool broadcastable to ``attn``, or None (all keys).

    Returns:
        (..., Q, K); a row with no weight on allowed keys stays 0.
    """
    if allowed is not None:
        attn = attn * allowed
    total = attn.sum(dim=-1, keepdim=True)
    return attn / torch.where(total > 0, total, torch.ones_like(total))


def row_distance(attn: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """Attention-weighted mean distance of each query row.

    Args:
        attn: (..., Q, K) rows summing to 1 (see :func:`renormalise`).
        distance: (Q, K) (or broadcastable) distance from each query to each key.

    Returns:
        (..., Q): Σ_k a_qk · d_qk.
    """
    return (attn * distance.to(attn.dtype)).sum(dim=-1)


def row_entropy(attn: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised Shannon entropy of each row: H(row) / log(number of allowed keys).

    0 when a query puts all its weight on one key, 1 when it spreads evenly over every key it
    may attend to. A row with a single allowed key has no choice and gets 0.

    Args:
        attn: (..., Q, K) rows summing to 1 over the allowed keys.
        allowed: bool broadcastable to ``attn`` (default: all K keys).

    Returns:
        (..., Q) in [0, 1].
    """
    if allowed is None:
        count = torch.full(attn.shape[:-1], attn.shape[-1], dtype=attn.dtype, device=attn.device)
    else:
        attn = attn * allowed
        count = allowed.expand_as(attn).sum(dim=-1).to(attn.dtype)
    entropy = -torch.special.xlogy(attn, attn).sum(dim=-1)
    log_count = torch.log(count)
    return torch.where(count > 1, entropy / torch.where(count > 1, log_count, torch.ones_like(log_count)),
                       torch.zeros_like(entropy))


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int = -1, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim``.

    Args:
        a, b: tensors of the same (broadcastable) shape.
        weights: optional 0/1 (or non-negative) weights along the same shape; a weight of 0
            leaves an entry out.

    Returns:
        ``a``'s shape without ``dim``; NaN where either side is constant (up to rounding).
    """
    a, b = torch.broadcast_tensors(a.double(), b.double())
    w = torch.ones_like(a) if weights is None else weights.double().expand_as(a)
    total = w.sum(dim=dim, keepdim=True)
    da = a - (w * a).sum(dim=dim, keepdim=True) / total
    db = b - (w * b).sum(dim=dim, keepdim=True) / total
    cov = (w * da * db).sum(dim=dim)
    var_a, var_b = (w * da * da).sum(dim=dim), (w * db * db).sum(dim=dim)
    # constant up to rounding: variance below 1e-20 of the raw second moment
    varies = (var_a > _CONSTANT * (w * a * a).sum(dim=dim)) & (var_b > _CONSTANT * (w * b * b).sum(dim=dim))
    return torch.where(varies, cov / (var_a * var_b).clamp_min(1e-300).sqrt(), torch.full_like(cov, float("nan")))


def positional_score(maps: torch.Tensor) -> torch.Tensor:
    """How much a head's map stays the same whatever the image.

    For every pair of different images the Pearson correlation of their flattened maps; each
    image's score is its mean correlation with all the other images, so the mean over images
    equals the mean over all pairs. 1: the same map on every image (purely positional);
    ≈ 0: unrelated maps.

    Args:
        maps: (images, ..., D) one flattened map per image and head.

    Returns:
        (images, ...); NaN everywhere when there are fewer than 2 images.
    """
    n = maps.shape[0]
    maps = maps.double()
    if n < 2:
        return torch.full(maps.shape[:-1], float("nan"), dtype=torch.float64)
    centred = maps - maps.mean(dim=-1, keepdim=True)
    norm = centred.norm(dim=-1, keepdim=True)
    varies = norm**2 > _CONSTANT * (maps * maps).sum(dim=-1, keepdim=True)
    z = centred / torch.where(varies, norm, torch.full_like(norm, float("nan")))
    gram = torch.einsum("i...d,j...d->ij...", z, z)  # images, images, ...
    diag = torch.diagonal(gram, dim1=0, dim2=1).movedim(-1, 0)  # images, ...
    return (gram.sum(dim=1) - diag) / (n - 1)


def cls_concentration(rows: torch.Tensor, top_fraction: float = 0.1) -> torch.Tensor:
    """Share of a (CLS) row's patch mass that falls on its top ``top_fraction`` of patches.

    The row is renormalised over the patches; k = ceil(top_fraction · patches) (at least 1).
    A uniform row gives k / patches; a row on one patch gives 1.

    Args:
        rows: (..., patches) attention of one query to the patch keys.

    Returns:
        (...) in [k / patches, 1].
    """
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must lie in (0, 1], got {top_fraction}")
    k = max(1, math.ceil(top_fraction * rows.shape[-1] - 1e-9))
    rows = renormalise(rows.double().unsqueeze(-2)).squeeze(-2)
    return rows.topk(k, dim=-1).values.sum(dim=-1)


# ----------------------------------------------------------------------------- aggregation


# ----------------------------------------------------------------------------- ViT


@dataclass(frozen=True)
class VitAttentionStats:
    """Per-image attention statistics of a ViT (patch-to-patch, see the module notes).

    Attributes:
        mean_distance: (images, blocks, heads) mean attention distance in patches.
        mean_distance_px: (images, blocks, heads) the same in input pixels.
        entropy: (images, blocks, heads) normalised row entropy, mean over query patches.
        positional: (images, blocks, heads) each image's mean Pearson correlation with every
            other image of its flattened patch-to-patch matrix (NaN with one image).
        cls_concentration: (images, blocks, heads) share of the CLS row's patch mass on its
            top ``top_fraction`` of patches (NaN without a class token).
        block_similarity: (images, blocks − 1) Pearson correlation between block b's and
            block b + 1's head-averaged, flattened patch-to-patch matrices.
        grid: (h, w) patch grid; patch_size: (ph, pw) pixels per patch;
        prefix_names: the prefix tokens left out; top_fraction: for ``cls_concentration``.
        uniform_distance: mean distance (patches) of uniform attention over the grid.
    """

    mean_distance: np.ndarray
    mean_distance_px: np.ndarray
    entropy: np.ndarray
    positional: np.ndarray
    cls_concentration: np.ndarray
    block_similarity: np.ndarray
    grid: tuple[int, int]
    patch_size: tuple[float, float]
    prefix_names: tuple[str, ...]
    top_fraction: float
    uniform_distance: float

    @property
    def images(self) -> int:
        return self.mean_distance.shape[0]

    @property
    def blocks(self) -> int:
        return self.mean_distance.shape[1]

    @property
    def heads(self) -> int:
        return self.mean_distance.shape[2]

    def summary(self, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, Interval]:
        """:func:`bootstrap_interval` of every per-image field, keyed by field name."""
        names = ("mean_distance", "mean_distance_px", "entropy", "positional", "cls_concentration", "block_similarity")
        return {name: bootstrap_interval(getattr(self, name), n_boot=n_boot, seed=seed, confidence=confidence)
                for name in names}


def vit_stats_from_attention(attn: torch.Tensor, layout: TokenLayout, patch_size: tuple[float, float],
                             top_fraction: float = 0.1) -> VitAttentionStats:
    """All ViT statistics from captured attention (one block at a time, in float64).

    Args:
        attn: (blocks, images, heads, tokens, tokens) post-softmax attention, prefix tokens
            first, then the patches row-major over ``layout.grid``
            (:func:`generator.attention.capture.vit_attention`).
        layout: the model's token layout.
        patch_size: (ph, pw) input pixels per patch.
        top_fraction: fraction of patches for :func:`cls_concentration`.

    Returns:
        :class:`VitAttentionStats`.
    """
    blocks, images, heads, tokens, _ = attn.shape
    if tokens != layout.num_tokens:
        raise ValueError(f"attention has {tokens} tokens but the layout expects {layout.num_tokens}")
    p = layout.num_prefix_tokens
    grid = layout.grid
    spacing = (float(patch_size[0]), float(patch_size[1]))
    dist, dist_px = grid_distances(grid), grid_distances(grid, spacing)
    shape = (images, blocks, heads)
    out = {name: torch.empty(shape, dtype=torch.float64) for name in ("d", "dpx", "ent", "pos")}
    conc = torch.full(shape, float("nan"), dtype=torch.float64)
    similarity = torch.empty(images, max(blocks - 1, 0), dtype=torch.float64)
    previous = None
    for b in range(blocks):
        a = attn[b].detach().cpu().double()  # images, heads, T, T
        patches = renormalise(a[..., p:, p:])  # images, heads, P, P
        out["d"][:, b] = row_distance(patches, dist).mean(dim=-1)
        out["dpx"][:, b] = row_distance(patches, dist_px).mean(dim=-1)
        out["ent"][:, b] = row_entropy(patches).mean(dim=-1)
        out["pos"][:, b] = positional_score(patches.reshape(images, heads, -1))
        if layout.has_class_token:
            conc[:, b] = cls_concentration(a[..., layout.prefix_names.index("CLS"), p:], top_fraction)
        mean_map = patches.mean(dim=1).reshape(images, -1)
        if previous is not None:
            similarity[:, b - 1] = pearson(previous, mean_map)
        previous = mean_map
    return VitAttentionStats(
        mean_distance=out["d"].cpu().numpy(), mean_distance_px=out["dpx"].cpu().numpy(), entropy=out["ent"].cpu().numpy(),
        positional=out["pos"].cpu().numpy(), cls_concentration=conc.cpu().numpy(), block_similarity=similarity.cpu().numpy(),
        grid=grid, patch_size=spacing, prefix_names=layout.prefix_names, top_fraction=top_fraction,
        uniform_distance=uniform_mean_distance(grid),
    )


def vit_attention_stats(model: torch.nn.Module, x: torch.Tensor, top_fraction: float = 0.1) -> VitAttentionStats:
    """Run a timm ViT once on ``x`` and return :func:`vit_stats_from_attention`.

    Args:
        model: a timm VisionTransformer in eval mode.
        x: (images, 3, H, W) preprocessed input.

    Returns:
        :class:`VitAttentionStats`; the patch size in pixels is the family adapter's
        :meth:`~generator.families.ModelFamily.patch_size`.
    """
    from ..families import family_of

    family = family_of(model)
    layout = family.token_layout(model)
    with torch.no_grad():
        _, attn = family.attention(model, x)
    patch = family.patch_size(model)
    return vit_stats_from_attention(attn, layout, tuple(float(s) for s in patch), top_fraction)


# ----------------------------------------------------------------------------- offset kernels


KERNEL_CLASSES = ("vertical", "horizontal", "local", "ring", "mixed")


def offset_kernel(window_attn: torch.Tensor, geometry: BlockGeometry) -> torch.Tensor:
    """Each head's mean attention weight as a function of the offset key − query.

    Entry [dy + wh − 1, dx + ww − 1] is the mean, over images' (window, query) pairs whose
    key at offset (dy, dx) lies in the window and is allowed (:func:`window_allowed`), of
    the (renormalised) attention weight on that key. Averaging over the pairs that exist at
    each offset (rather than summing) removes the window-border effect: a head that attends
    uniformly gives a flat kernel.

    Args:
        window_attn: (images, windows, heads, P, P), P = wh·ww.
        geometry: the block's geometry.

    Returns:
        (images, heads, 2wh − 1, 2ww − 1) float64.
    """
    (wh, ww), allowed = geometry.window, window_allowed(geometry)  # windows, P, P
    a = renormalise(window_attn.detach().cpu().double(), allowed[None, :, None])
    summed = a.sum(dim=1)  # images, heads, P, P (disallowed pairs are 0)
    counts = allowed.sum(dim=0).double()  # P, P
    index = _offset_index((wh, ww)).reshape(-1)
    bins = (2 * wh - 1) * (2 * ww - 1)
    images, heads = summed.shape[:2]
    total = torch.zeros(images, heads, bins, dtype=torch.float64).index_add_(2, index, summed.reshape(images, heads, -1))
    count = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, counts.reshape(-1))
    kernel = total / torch.where(count > 0, count, torch.ones_like(count))
    return kernel.reshape(images, heads, 2 * wh - 1, 2 * ww - 1)


@dataclass(frozen=True)
class KernelThresholds:
    """Named thresholds of :func:`classify_kernel` (shares are of the kernel's total mass).

    Attributes:
        axis_min_share: a vertical (horizontal) head puts at least this share on the dx = 0
            (dy = 0) axis, centre cell excluded ...
        axis_dominance: ... and at least this many times the share on the other axis.
        local_min_share: a local head puts at least this share within Chebyshev radius 1
            (the 3×3 block around the centre, centre included).
        ring_min_ratio: a ring head's best Chebyshev ring of radius ≥ 2 has a mean weight at
            least this many times the mean weight within radius 1 (attends to its surroundings
            while suppressing its immediate vicinity).
    """

    axis_min_share: float = 0.35
    axis_dominance: float = 2.0
    local_min_share: float = 0.5
    ring_min_ratio: float = 2.0


@dataclass(frozen=True)
class KernelMeasures:
    """Shape measures of one offset kernel (see :func:`kernel_measures`)."""

    vertical: float
    horizontal: float
    local: float
    ring_ratio: float
    ring_radius: int
    elongation: float


def kernel_measures(kernel: np.ndarray | torch.Tensor) -> KernelMeasures:
    """Measures that tell offset kernels apart.

    Args:
        kernel: (2wh − 1, 2ww − 1) non-negative, centre = offset (0, 0).

    Returns:
        :class:`KernelMeasures` with, for the kernel scaled to total 1:
        ``vertical`` mass on dx = 0 without the centre; ``horizontal`` mass on dy = 0 without
        the centre; ``local`` mass within Chebyshev radius 1; ``ring_ratio`` the mean weight on the
        heaviest (by mean weight) Chebyshev ring of radius r ≥ 2 over the mean weight within
        radius 1 (NaN when the kernel has no ring of radius 2; inf when only the inner block
        is empty) and ``ring_radius`` that r (0 when undefined); ``elongation`` log2(E[dy²] / E[dx²]) of the
        kernel as a distribution over offsets (> 0: taller than wide).
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"an offset kernel is (2wh − 1, 2ww − 1) with a centre cell, got shape {k.shape}")
    total = k.sum()
    if not total > 0:
        raise ValueError("the kernel has no mass")
    k = k / total
    cy, cx = k.shape[0] // 2, k.shape[1] // 2
    dy = np.arange(k.shape[0])[:, None] - cy
    dx = np.arange(k.shape[1])[None, :] - cx
    cheb = np.maximum(np.abs(dy), np.abs(dx))
    centre = k[cy, cx]
    inner = cheb <= 1
    inner_mean = k[inner].mean()
    best_ratio, best_r = float("nan"), 0
    ring_means = [float(k[cheb == r].mean()) for r in range(2, min(cy, cx) + 1)]
    if ring_means:
        best_r = 2 + int(np.argmax(ring_means))
        best_mean = ring_means[best_r - 2]
        best_ratio = best_mean / inner_mean if inner_mean > 0 else (float("inf") if best_mean > 0 else float("nan"))
    ey, ex = float((k * dy**2).sum()), float((k * dx**2).sum())
    elongation = math.log2(ey / ex) if ex > 0 and ey > 0 else (float("inf") if ey > 0 else float("-inf") if ex > 0 else 0.0)
    return KernelMeasures(vertical=float(k[:, cx].sum() - centre), horizontal=float(k[cy, :].sum() - centre),
                          local=float(k[inner].sum()), ring_ratio=best_ratio, ring_radius=best_r,
                          elongation=elongation)


def classify_kernel(kernel: np.ndarray | torch.Tensor, thresholds: KernelThresholds = KernelThresholds()) -> str:
    """Name an offset kernel's shape: "vertical", "horizontal", "local", "ring" or "mixed".

    Tried in this order, with :class:`KernelThresholds`:

    1. vertical: ``vertical ≥ axis_min_share`` and ``vertical ≥ axis_dominance · horizontal``;
    2. horizontal: the same with the axes swapped;
    3. local: ``local ≥ local_min_share``;
    4. ring: ``ring_ratio ≥ ring_min_ratio``;
    5. otherwise mixed.

    Args:
        kernel: (2wh − 1, 2ww − 1) from :func:`offset_kernel` (one head, images averaged).
    """
    m = kernel_measures(kernel)
    if m.vertical >= thresholds.axis_min_share and m.vertical >= thresholds.axis_dominance * m.horizontal:
        return "vertical"
    if m.horizontal >= thresholds.axis_min_share and m.horizontal >= thresholds.axis_dominance * m.vertical:
        return "horizontal"
    if m.local >= thresholds.local_min_share:
        return "local"
    if m.ring_ratio >= thresholds.ring_min_ratio:  # NaN compares False
        return "ring"
    return "mixed"


# ----------------------------------------------------------------------------- Swin


def bias_attention(bias: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The attention a head would have from its relative position bias alone.

    Args:
        bias: (heads, P, P) relative position bias (timm ``WindowAttention._get_rel_pos_bias()[0]``).
        mask: (windows, P, P) additive shift mask, or None (one window's worth, broadcast).

    Returns:
        (windows, heads, P, P) softmax(bias + mask) over the keys (windows = 1 without mask).
    """
    scores = bias.double().unsqueeze(0)
    if mask is not None:
        scores = scores + mask.double().unsqueeze(1)
    return scores.softmax(dim=-1)


def bias_correlation(window_attn: torch.Tensor, predicted: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Pearson correlation, per image and head, between observed window attention and the
    bias-only attention, over all allowed (window, query, key) entries.

    Args:
        window_attn: (images, windows, heads, P, P) observed.
        predicted: (windows or 1, heads, P, P) from :func:`bias_attention`.
        allowed: (windows, P, P) bool (:func:`window_allowed`).

    Returns:
        (images, heads); 1 when the bias alone explains the attention up to an affine map.
    """
    obs = window_attn.detach().cpu().double().transpose(1, 2)  # images, heads, windows, P, P
    pred = predicted.double().transpose(0, 1).unsqueeze(0).expand_as(obs)
    w = allowed[None, None].expand_as(obs)
    images, heads = obs.shape[:2]
    return pearson(obs.reshape(images, heads, -1), pred.reshape(images, heads, -1), weights=w.reshape(images, heads, -1))


@dataclass(frozen=True)
class SwinBlockStats:
    """Per-image statistics of one Swin block (within windows; see the module notes).

    Attributes:
        stage, block: 0-based position.
        geometry: the block's :class:`BlockGeometry`.
        mean_distance: (images, heads) mean attention distance in grid units of this stage.
        mean_distance_px: (images, heads) the same in input pixels.
        entropy: (images, heads) normalised entropy (by each query's allowed key count),
            mean over windows and queries.
        kernels: (images, heads, 2wh − 1, 2ww − 1) :func:`offset_kernel`.
        bias_correlation: (images, heads) :func:`bias_correlation` (NaN when no bias given).
        pixel_spacing: (py, px) input pixels per grid cell of this stage.
    """

    stage: int
    block: int
    geometry: BlockGeometry
    mean_distance: np.ndarray
    mean_distance_px: np.ndarray
    entropy: np.ndarray
    kernels: np.ndarray
    bias_correlation: np.ndarray
    pixel_spacing: tuple[float, float]
    thresholds: KernelThresholds = field(default_factory=KernelThresholds)

    @property
    def mean_kernel(self) -> np.ndarray:
        """(heads, 2wh − 1, 2ww − 1): the kernels averaged over images."""
        return self.kernels.mean(axis=0)

    @property
    def classes(self) -> tuple[str, ...]:
        """:func:`classify_kernel` of each head's image-averaged kernel."""
        return tuple(classify_kernel(k, self.thresholds) for k in self.mean_kernel)

    @property
    def measures(self) -> tuple[KernelMeasures, ...]:
        return tuple(kernel_measures(k) for k in self.mean_kernel)


def swin_block_stats(window_attn: torch.Tensor, geometry: BlockGeometry, *, bias: torch.Tensor | None = None,
                     pixel_spacing: tuple[float, float] = (1.0, 1.0), stage: int = 0, block: int = 0,
                     thresholds: KernelThresholds = KernelThresholds()) -> SwinBlockStats:
    """Statistics of one block's window attention.

    Args:
        window_attn: (images, windows, heads, P, P) from :func:`generator.attention.windows.window_attention`.
        geometry: the block's geometry.
        bias: (heads, P, P) relative position bias, or None (then ``bias_correlation`` is NaN).
        pixel_spacing: input pixels per grid cell along (rows, cols).

    Returns:
        :class:`SwinBlockStats`.
    """
    allowed = window_allowed(geometry)  # windows, P, P
    a = renormalise(window_attn.detach().cpu().double(), allowed[None, :, None])
    dist = window_distances(geometry.window)
    dist_px = window_distances(geometry.window, pixel_spacing)
    images, _, heads = a.shape[:3]
    mean_over = (1, 3)  # windows, queries
    distance = row_distance(a, dist).mean(dim=mean_over)
    distance_px = row_distance(a, dist_px).mean(dim=mean_over)
    entropy = row_entropy(a, allowed[None, :, None]).mean(dim=mean_over)
    if bias is None:
        correlation = torch.full((images, heads), float("nan"), dtype=torch.float64)
    else:
        correlation = bias_correlation(window_attn, bias_attention(bias, window_shift_mask(geometry)), allowed)
    return SwinBlockStats(stage=stage, block=block, geometry=geometry, mean_distance=distance.cpu().numpy(),
                          mean_distance_px=distance_px.cpu().numpy(), entropy=entropy.cpu().numpy(),
                          kernels=offset_kernel(window_attn, geometry).cpu().numpy(), bias_correlation=correlation.cpu().numpy(),
                          pixel_spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])), thresholds=thresholds)


@dataclass(frozen=True)
class SwinAttentionStats:
    """Statistics of every block of a Swin model, keyed by (stage, block), 0-based."""

    blocks: dict[tuple[int, int], SwinBlockStats]

    def summary(self, *, n_boot: int = 2000, seed: int = 0,
                confidence: float = 0.95) -> dict[tuple[int, int], dict[str, Interval]]:
        """:func:`bootstrap_interval` of each block's per-image fields (distance, entropy, bias correlation)."""
        names = ("mean_distance", "mean_distance_px", "entropy", "bias_correlation")
        return {key: {name: bootstrap_interval(getattr(s, name), n_boot=n_boot, seed=seed, confidence=confidence)
                      for name in names} for key, s in self.blocks.items()}


def swin_attention_stats(model: torch.nn.Module, x: torch.Tensor,
                         thresholds: KernelThresholds = KernelThresholds()) -> SwinAttentionStats:
    """Run a Swin once on ``x`` and compute :func:`swin_block_stats` for every block.

    The position bias of each head is the family adapter's
    (:meth:`generator.families.ModelFamily.window_position_bias`); a stage's pixel spacing is the
    input size over its grid.

    Args:
        model: a timm SwinTransformer (v1 or v2) in eval mode.
        x: (images, 3, H, W) preprocessed input.
    """
    from ..families import family_of

    family = family_of(model)
    with torch.no_grad():
        _, attention, geometry = family.window_attention(model, x)
        biases = family.window_position_bias(model)
        out = {}
        for key, attn in attention.items():
            g = geometry[key]
            bias = biases[key].detach().cpu()
            spacing = (x.shape[-2] / g.grid[0], x.shape[-1] / g.grid[1])
            out[key] = swin_block_stats(attn, g, bias=bias, pixel_spacing=spacing, stage=key[0], block=key[1],
                                        thresholds=thresholds)
    return SwinAttentionStats(blocks=out)
