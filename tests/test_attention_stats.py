"""Attention statistics against known answers and plain-loop references.

Synthetic attention with closed-form answers (self attention, uniform attention, fixed maps,
offset kernels of known shape), brute-force references written with Python loops in the
original token order, and the real capture on the two shipped models for shapes and ranges.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.vision_transformer import VisionTransformer

from generator.attention.capture import TokenLayout
from generator.attention.stats import (KERNEL_CLASSES, bias_attention, bias_correlation, bootstrap_interval,
                                       classify_kernel, cls_concentration, kernel_measures, offset_kernel,
                                       positional_score, swin_attention_stats, swin_block_stats,
                                       uniform_mean_distance, vit_attention_stats, vit_stats_from_attention,
                                       window_allowed, window_shift_mask)
from generator.models.embedded import SWIN_NAME, VIT_NAME
from generator.attention.windows import BlockGeometry, full_attention_from_windows, window_attention
from generator.devtools.train_demo import _to_model_input

from .conftest import ROOT
from .test_attention import assert_no_hooks

SUBSET = ROOT / "tests" / "data" / "fashion_mnist_test_1k.npz"
LAYOUT = TokenLayout(prefix_names=("CLS", "REG0"), grid=(3, 5))  # two prefix tokens, a non-square grid


def brute_mean_distance(grid: tuple[int, int], spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Mean Euclidean distance over all ordered pairs of cells (self pairs included), by loops."""
    h, w = grid
    cells = [(r, c) for r in range(h) for c in range(w)]
    total = 0.0
    for r1, c1 in cells:
        for r2, c2 in cells:
            total += math.hypot((r1 - r2) * spacing[0], (c1 - c2) * spacing[1])
    return total / len(cells) ** 2


def vit_like(rows: torch.Tensor, layout: TokenLayout = LAYOUT, blocks: int = 2, images: int = 3,
             heads: int = 2) -> torch.Tensor:
    """(blocks, images, heads, T, T) attention with the same (T, T) matrix everywhere."""
    return rows.double().expand(blocks, images, heads, *rows.shape).clone()


# ----------------------------------------------------------------------------- ViT known answers


def test_self_attention_has_zero_distance_and_entropy():
    stats = vit_stats_from_attention(vit_like(torch.eye(LAYOUT.num_tokens)), LAYOUT, (2, 3))
    assert stats.mean_distance.shape == (3, 2, 2)
    np.testing.assert_allclose(stats.mean_distance, 0.0, atol=1e-12)
    np.testing.assert_allclose(stats.mean_distance_px, 0.0, atol=1e-12)
    np.testing.assert_allclose(stats.entropy, 0.0, atol=1e-12)
    # the CLS row's patch mass is 0 (it attends to itself): renormalising leaves 0
    np.testing.assert_allclose(stats.cls_concentration, 0.0, atol=1e-12)


def test_uniform_attention_has_entropy_one_and_the_closed_form_distance():
    t = LAYOUT.num_tokens
    stats = vit_stats_from_attention(vit_like(torch.full((t, t), 1.0 / t)), LAYOUT, (2, 3))
    np.testing.assert_allclose(stats.entropy, 1.0, atol=1e-12)
    np.testing.assert_allclose(stats.mean_distance, brute_mean_distance((3, 5)), rtol=1e-12)
    np.testing.assert_allclose(stats.mean_distance_px, brute_mean_distance((3, 5), (2, 3)), rtol=1e-12)
    assert stats.uniform_distance == pytest.approx(brute_mean_distance((3, 5)), rel=1e-12)
    assert uniform_mean_distance((4, 4)) == pytest.approx(brute_mean_distance((4, 4)), rel=1e-12)
    # top 10 % of 15 patches is 2 patches: a uniform CLS row puts 2/15 of its mass there
    np.testing.assert_allclose(stats.cls_concentration, 2 / 15, atol=1e-12)
    np.testing.assert_allclose(stats.block_similarity, np.nan)  # constant maps: correlation undefined


def test_prefix_keys_are_dropped_and_rows_renormalised_over_patches():
    """Every patch puts half its weight on CLS and half on its right neighbour (left on the last column)."""
    t, (h, w), p = LAYOUT.num_tokens, LAYOUT.grid, LAYOUT.num_prefix_tokens
    rows = torch.zeros(t, t)
    rows[:p, 0] = 1.0
    for r in range(h):
        for c in range(w):
            q = p + r * w + c
            rows[q, 0] = 0.5
            rows[q, p + r * w + (c + 1 if c + 1 < w else c - 1)] = 0.5
    stats = vit_stats_from_attention(vit_like(rows), LAYOUT, (2, 3))
    np.testing.assert_allclose(stats.mean_distance, 1.0, atol=1e-12)
    np.testing.assert_allclose(stats.mean_distance_px, 3.0, atol=1e-12)  # horizontal step = patch width
    np.testing.assert_allclose(stats.entropy, 0.0, atol=1e-12)


def test_random_attention_matches_a_plain_loop_reference():
    torch.manual_seed(0)
    t, (h, w), p = LAYOUT.num_tokens, LAYOUT.grid, LAYOUT.num_prefix_tokens
    attn = torch.rand(2, 3, 2, t, t).double() ** 4
    attn = attn / attn.sum(-1, keepdim=True)
    stats = vit_stats_from_attention(attn, LAYOUT, (2, 3))
    a = attn.tolist()
    for b in range(2):
        for i in range(3):
            for head in range(2):
                dist = ent = 0.0
                for q in range(h * w):
                    row = a[b][i][head][p + q][p:]
                    s = sum(row)
                    for k, v in enumerate(row):
                        v /= s
                        dist += v * math.hypot(q // w - k // w, q % w - k % w)
                        ent -= v * math.log(v)
                assert stats.mean_distance[i, b, head] == pytest.approx(dist / (h * w), rel=1e-10)
                assert stats.entropy[i, b, head] == pytest.approx(ent / (h * w) / math.log(h * w), rel=1e-10)
                cls = sorted(a[b][i][head][0][p:], reverse=True)
                assert stats.cls_concentration[i, b, head] == pytest.approx(sum(cls[:2]) / sum(cls), rel=1e-10)
    # block similarity: Pearson of head-averaged renormalised patch matrices, by numpy
    patches = attn[..., p:, p:] / attn[..., p:, p:].sum(-1, keepdim=True)
    mean_maps = patches.mean(2).reshape(2, 3, -1).numpy()
    for i in range(3):
        assert stats.block_similarity[i, 0] == pytest.approx(np.corrcoef(mean_maps[0, i], mean_maps[1, i])[0, 1])


def test_positional_score_is_one_for_a_fixed_map_and_near_zero_for_random_maps():
    rng = np.random.default_rng(0)
    fixed = torch.from_numpy(rng.dirichlet(np.ones(49), size=49)).reshape(-1)
    same = fixed.expand(6, 3, fixed.numel())  # images, heads, D
    np.testing.assert_allclose(positional_score(same), 1.0, atol=1e-12)
    random = torch.from_numpy(rng.dirichlet(np.ones(49), size=(6, 3, 49))).reshape(6, 3, -1)
    score = positional_score(random)
    assert score.shape == (6, 3)
    assert abs(float(score.mean())) < 0.05
    # the mean over images equals the mean over unordered image pairs
    x = random.numpy()
    pairs = [np.corrcoef(x[i, 0], x[j, 0])[0, 1] for i in range(6) for j in range(i + 1, 6)]
    assert float(score[:, 0].mean()) == pytest.approx(np.mean(pairs), rel=1e-10)
    assert torch.isnan(positional_score(random[:1])).all()  # one image: nothing to compare


def test_cls_concentration_bounds():
    rows = torch.zeros(2, 20)
    rows[0, 7] = 1.0
    rows[1] = 1.0
    np.testing.assert_allclose(cls_concentration(rows, 0.1), [1.0, 2 / 20])
    np.testing.assert_allclose(cls_concentration(rows[1:], 0.25), [5 / 20])
    with pytest.raises(ValueError):
        cls_concentration(rows, 0.0)


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_contains_the_mean_and_is_seeded():
    rng = np.random.default_rng(1)
    values = rng.normal(2.0, 1.0, size=(40, 3, 2))
    first = bootstrap_interval(values, n_boot=2000, seed=7)
    again = bootstrap_interval(values, n_boot=2000, seed=7)
    other = bootstrap_interval(values, n_boot=2000, seed=8)
    np.testing.assert_allclose(first.mean, values.mean(0))
    assert (first.low <= first.mean).all() and (first.mean <= first.high).all()
    np.testing.assert_array_equal(first.low, again.low)
    np.testing.assert_array_equal(first.high, again.high)
    assert not np.array_equal(first.low, other.low)
    # width close to the normal-theory 95 % interval, 2 · 1.96 · s / √n
    expected = 2 * 1.96 * values.std(0, ddof=1) / math.sqrt(40)
    np.testing.assert_allclose(first.high - first.low, expected, rtol=0.2)
    single = bootstrap_interval(values[:1])
    np.testing.assert_allclose(single.low, values[0])
    np.testing.assert_allclose(single.high, values[0])


# ----------------------------------------------------------------------------- offset kernels


def kernel_from(rule, radius: int = 6) -> np.ndarray:
    """(2r+1, 2r+1) kernel with weight rule(dy, dx) ∈ {0, 1} at each offset."""
    return np.array([[float(rule(dy, dx)) for dx in range(-radius, radius + 1)] for dy in range(-radius, radius + 1)])


SHAPES = {
    "vertical": lambda dy, dx: dx == 0 and dy != 0,
    "horizontal": lambda dy, dx: dy == 0 and dx != 0,
    "local": lambda dy, dx: max(abs(dy), abs(dx)) <= 1,
    "ring": lambda dy, dx: max(abs(dy), abs(dx)) == 3,
    "mixed": lambda dy, dx: True,
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_classify_kernel_names_each_pure_shape(name):
    assert classify_kernel(kernel_from(SHAPES[name])) == name


def test_kernel_measures_of_known_kernels():
    m = kernel_measures(kernel_from(SHAPES["vertical"]))
    assert (m.vertical, m.horizontal, m.local) == pytest.approx((1.0, 0.0, 2 / 12))
    assert m.elongation == math.inf
    uniform = kernel_measures(kernel_from(SHAPES["mixed"]))
    assert uniform.local == pytest.approx(9 / 169) and uniform.ring_ratio == pytest.approx(1.0)
    assert uniform.elongation == pytest.approx(0.0)
    ring = kernel_measures(kernel_from(SHAPES["ring"]))
    assert ring.ring_radius == 3 and ring.ring_ratio == math.inf


def synthetic_window_attention(rule, geometry: BlockGeometry, images: int = 2) -> torch.Tensor:
    """(images, windows, 1, P, P): every query spreads evenly over the allowed keys with rule(dy, dx)
    (over all its allowed keys when none fits the rule)."""
    wh, ww = geometry.window
    allowed = window_allowed(geometry)
    slots = [(r, c) for r in range(wh) for c in range(ww)]
    base = torch.tensor([[float(rule(k[0] - q[0], k[1] - q[1])) for k in slots] for q in slots], dtype=torch.float64)
    attn = base * allowed
    empty = attn.sum(-1, keepdim=True) == 0  # no allowed key at the rule's offsets (small shifted regions)
    attn = torch.where(empty, allowed.double(), attn)
    attn = attn / attn.sum(-1, keepdim=True)
    return attn[None, :, None].expand(images, -1, 1, -1, -1)


@pytest.mark.parametrize("name", ["vertical", "horizontal", "local", "ring"])
@pytest.mark.parametrize("shift", [(0, 0), (3, 3)])
def test_window_attention_with_a_pure_shape_gives_that_kernel_class(name, shift):
    geometry = BlockGeometry(grid=(14, 14), window=(7, 7), shift=shift)
    attn = synthetic_window_attention(SHAPES[name], geometry)
    kernel = offset_kernel(attn, geometry)
    assert kernel.shape == (2, 1, 13, 13)
    assert classify_kernel(kernel[0, 0]) == name


def test_uniform_window_attention_gives_a_flat_kernel():
    geometry = BlockGeometry(grid=(14, 14), window=(7, 7), shift=(0, 0))
    kernel = offset_kernel(synthetic_window_attention(SHAPES["mixed"], geometry), geometry)
    np.testing.assert_allclose(kernel, 1 / 49, rtol=1e-12)


@pytest.mark.parametrize("grid, window, shift", [((14, 14), (7, 7), (3, 3)), ((12, 8), (4, 4), (2, 2)),
                                                 ((8, 12), (4, 6), (2, 3))])
def test_shift_mask_equals_timms(grid, window, shift):
    block = SwinTransformerBlock(dim=8, input_resolution=grid, num_heads=1, window_size=window, shift_size=shift)
    assert tuple(block.shift_size) == shift
    ours = window_shift_mask(BlockGeometry(grid=grid, window=window, shift=shift))
    assert torch.equal(ours, block.attn_mask)
    assert window_shift_mask(BlockGeometry(grid=grid, window=window, shift=(0, 0))) is None


def test_bias_explains_a_head_whose_attention_is_softmax_of_the_bias():
    torch.manual_seed(0)
    geometry = BlockGeometry(grid=(14, 14), window=(7, 7), shift=(3, 3))
    bias = torch.randn(3, 49, 49)
    exact = bias_attention(bias, window_shift_mask(geometry))  # windows, heads, P, P
    attn = exact.unsqueeze(0).expand(2, -1, -1, -1, -1).clone()
    attn[:, :, 2] = torch.rand_like(attn[:, :, 2]).softmax(-1)  # head 2 ignores the bias
    corr = bias_correlation(attn, exact, window_allowed(geometry))
    np.testing.assert_allclose(corr[:, :2], 1.0, atol=1e-12)
    assert (corr[:, 2].abs() < 0.2).all()
    stats = swin_block_stats(attn, geometry, bias=bias)
    np.testing.assert_allclose(stats.bias_correlation[:, :2], 1.0, atol=1e-12)


# ----------------------------------------------------------------------------- shipped models


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    data = np.load(SUBSET)
    return _to_model_input(torch.from_numpy(data["images"][:6]))


@pytest.fixture(scope="module")
def shipped_vit():
    return timm.create_model(VIT_NAME, pretrained=True).eval()


@pytest.fixture(scope="module")
def shipped_swin():
    return timm.create_model(SWIN_NAME, pretrained=True).eval()


def swin_reference(full: list, grid: tuple[int, int], table: list, window: tuple[int, int], head: int,
                   spacing: tuple[float, float]):
    """Plain loops over one image's and head's full attention in original token order.

    Allowed keys are those with weight above 1e-30 (other windows hold exactly 0, pairs across
    a shifted window's wrap-around about e⁻¹⁰⁰). Offsets, distances and the bias-only
    prediction all come from original grid positions and timm's bias table.
    """
    h, w = grid
    wh, ww = window
    n = h * w
    dist = dist_px = 0.0
    kernel_sum, kernel_count = {}, {}
    observed, predicted = [], []
    for q in range(n):
        keys = [k for k in range(n) if full[q][k] > 1e-30]
        total = sum(full[q][k] for k in keys)
        logits = {}
        for k in keys:
            dy, dx = k // w - q // w, k % w - q % w
            v = full[q][k] / total
            dist += v * math.hypot(dy, dx)
            dist_px += v * math.hypot(dy * spacing[0], dx * spacing[1])
            kernel_sum[(dy, dx)] = kernel_sum.get((dy, dx), 0.0) + v
            kernel_count[(dy, dx)] = kernel_count.get((dy, dx), 0) + 1
            # timm's table index uses query − key
            logits[k] = table[(-dy + wh - 1) * (2 * ww - 1) + (-dx + ww - 1)][head]
        z = sum(math.exp(x) for x in logits.values())
        for k in keys:
            observed.append(full[q][k])
            predicted.append(math.exp(logits[k]) / z)
    kernel = np.zeros((2 * wh - 1, 2 * ww - 1))
    for (dy, dx), s in kernel_sum.items():
        kernel[dy + wh - 1, dx + ww - 1] = s / kernel_count[(dy, dx)]
    return dist / n, dist_px / n, kernel, np.corrcoef(observed, predicted)[0, 1]


def test_swin_stats_match_a_plain_loop_reference(shipped_swin):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 28, 28)
    stats = swin_attention_stats(shipped_swin, x)
    with torch.no_grad():
        _, attention, geometry = window_attention(shipped_swin, x)
    assert set(stats.blocks) == set(attention) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for key, s in stats.blocks.items():
        g = geometry[key]
        full = full_attention_from_windows(attention[key].double(), g).tolist()
        table = shipped_swin.layers[key[0]].blocks[key[1]].attn.relative_position_bias_table.tolist()
        spacing = (28 / g.grid[0], 28 / g.grid[1])
        heads = attention[key].shape[2]
        for i in range(2):
            for head in range(heads):
                dist, dist_px, kernel, corr = swin_reference(full[i][head], g.grid, table, g.window, head, spacing)
                assert s.mean_distance[i, head] == pytest.approx(dist, rel=1e-6)
                assert s.mean_distance_px[i, head] == pytest.approx(dist_px, rel=1e-6)
                np.testing.assert_allclose(s.kernels[i, head], kernel, rtol=1e-6, atol=1e-12)
                assert s.bias_correlation[i, head] == pytest.approx(corr, abs=1e-5)
    assert_no_hooks(shipped_swin)


def test_swin_entropy_matches_a_plain_loop_reference(shipped_swin):
    torch.manual_seed(1)
    x = torch.randn(1, 3, 28, 28)
    stats = swin_attention_stats(shipped_swin, x)
    with torch.no_grad():
        _, attention, geometry = window_attention(shipped_swin, x)
    key = (0, 1)  # the shifted block: queries have 9 to 49 allowed keys
    g = geometry[key]
    full = full_attention_from_windows(attention[key].double(), g)[0].tolist()
    n = g.grid[0] * g.grid[1]
    counts = set()
    for head in range(2):
        total = 0.0
        for q in range(n):
            keys = [k for k in range(n) if full[head][q][k] > 1e-30]
            counts.add(len(keys))
            z = sum(full[head][q][k] for k in keys)
            total += -sum(full[head][q][k] / z * math.log(full[head][q][k] / z) for k in keys) / math.log(len(keys))
        assert stats.blocks[key].entropy[0, head] == pytest.approx(total / n, rel=1e-6)
    # whole windows; 4 or 3 rows (columns) of 7 where one axis wraps; 4×4, 4×3, 3×4, 3×3 where both do
    assert counts == {49, 28, 21, 16, 12, 9}


def test_real_capture_on_the_shipped_vit_has_the_right_shapes_and_ranges(shipped_vit, images):
    stats = vit_attention_stats(shipped_vit, images)
    assert stats.grid == (7, 7) and stats.patch_size == (4.0, 4.0) and stats.prefix_names == ("CLS",)
    shape = (6, 6, 4)  # images, blocks, heads
    for name in ("mean_distance", "mean_distance_px", "entropy", "positional", "cls_concentration"):
        assert getattr(stats, name).shape == shape, name
        assert np.isfinite(getattr(stats, name)).all(), name
    assert stats.block_similarity.shape == (6, 5)
    far = math.hypot(6, 6)
    assert (stats.mean_distance > 0).all() and (stats.mean_distance < far).all()
    np.testing.assert_allclose(stats.mean_distance_px, 4 * stats.mean_distance, rtol=1e-12)
    assert (stats.entropy > 0).all() and (stats.entropy <= 1 + 1e-12).all()
    assert (np.abs(stats.positional) <= 1 + 1e-9).all() and (np.abs(stats.block_similarity) <= 1 + 1e-9).all()
    assert (stats.cls_concentration >= 5 / 49 - 1e-12).all() and (stats.cls_concentration <= 1 + 1e-12).all()
    summary = stats.summary(n_boot=200, seed=0)
    assert summary["mean_distance"].mean.shape == (6, 4) and summary["block_similarity"].low.shape == (5,)
    assert_no_hooks(shipped_vit)


def test_vit_without_class_token_has_no_cls_concentration():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=(24, 40), patch_size=8, embed_dim=24, depth=2, num_heads=2, num_classes=3,
                              class_token=False, global_pool="avg", reg_tokens=1).eval()
    stats = vit_attention_stats(model, torch.randn(3, 3, 24, 40))
    assert stats.grid == (3, 5) and stats.prefix_names == ("REG0",)
    assert np.isnan(stats.cls_concentration).all()
    assert np.isfinite(stats.mean_distance).all() and stats.mean_distance.shape == (3, 2, 2)


def test_real_capture_on_the_shipped_swin_has_the_right_shapes_and_ranges(shipped_swin, images):
    stats = swin_attention_stats(shipped_swin, images)
    heads = {0: 2, 1: 4}
    for (stage, block), s in stats.blocks.items():
        assert s.mean_distance.shape == s.entropy.shape == s.bias_correlation.shape == (6, heads[stage])
        assert s.kernels.shape == (6, heads[stage], 13, 13)
        assert s.pixel_spacing == (2.0 * 2**stage, 2.0 * 2**stage)
        assert (s.mean_distance > 0).all() and (s.mean_distance < math.hypot(6, 6)).all()
        np.testing.assert_allclose(s.mean_distance_px, s.pixel_spacing[0] * s.mean_distance, rtol=1e-12)
        assert (s.entropy > 0).all() and (s.entropy <= 1 + 1e-12).all()
        assert (np.abs(s.bias_correlation) <= 1 + 1e-9).all()
        assert set(s.classes) <= set(KERNEL_CLASSES) and len(s.classes) == heads[stage]
    summary = stats.summary(n_boot=100)
    assert summary[(1, 1)]["entropy"].mean.shape == (4,)
    assert_no_hooks(shipped_swin)
