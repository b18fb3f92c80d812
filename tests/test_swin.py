"""Swin window capture against timm's softmax; full attention @ V against the block's own output;
merging and rollout properties."""

from __future__ import annotations

import pytest
import timm
import torch

from generator.attention.windows import (BlockGeometry, full_attention, full_attention_from_windows, merge_matrix,
                                         swin_blocks, swin_rollout, window_attention, window_token_index)

from .test_attention import assert_no_hooks


def make(arch: str):
    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False).eval()


@pytest.fixture(scope="module")
def swin_tiny():
    return make("swin_tiny_patch4_window7_224")


@pytest.fixture(scope="module")
def embedded_swin():
    return make("swin_fmnist_patch2_28")


def timm_softmax(model, x):
    """timm's own softmax output, fused attention off, from a hook on WindowAttention.softmax."""
    blocks = swin_blocks(model)
    captured, handles, fused = {}, [], {}
    try:
        for key, block in blocks.items():
            fused[key] = block.attn.fused_attn
            block.attn.fused_attn = False
            handles.append(block.attn.softmax.register_forward_hook(
                lambda m, a, o, key=key: captured.__setitem__(key, o.clone())))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for key, block in blocks.items():
            block.attn.fused_attn = fused[key]
    return captured


@pytest.mark.parametrize("fused", [True, False])
def test_window_attention_equals_timm_softmax(embedded_swin, fused):
    model = embedded_swin
    for block in swin_blocks(model).values():
        block.attn.fused_attn = fused
    x = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(x)
        logits, attention, geometry = window_attention(model, x)
    assert torch.equal(logits, plain)
    ref = timm_softmax(model, x)
    assert set(attention) == set(ref) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for key, a in attention.items():
        torch.testing.assert_close(a.reshape(ref[key].shape), ref[key], atol=1e-5, rtol=0)
    assert attention[(0, 0)].shape == (2, 4, 2, 49, 49)
    assert geometry[(0, 1)].shift == (3, 3) and geometry[(0, 0)].shift == (0, 0)
    assert_no_hooks(model)


def block_output_check(model, x, stage, block_index):
    """full_attention @ V (V from the block's input, original order) vs the block's pre-projection output."""
    block = swin_blocks(model)[(stage, block_index)]
    inputs, pre_proj = {}, {}
    handles = [
        block.register_forward_pre_hook(lambda m, a: inputs.__setitem__("x", a[0])),
        block.attn.proj.register_forward_hook(lambda m, a, o: pre_proj.__setitem__("x", a[0])),
    ]
    try:
        with torch.no_grad():
            _, attention, geometry = window_attention(model, x)
    finally:
        for h in handles:
            h.remove()
    g = geometry[(stage, block_index)]
    full = full_attention_from_windows(attention[(stage, block_index)], g)
    batch, height, width, channels = inputs["x"].shape
    heads = block.attn.num_heads
    with torch.no_grad():
        tokens = block.norm1(inputs["x"]).reshape(batch, height * width, channels)  # original order
        v = block.attn.qkv(tokens).reshape(batch, height * width, 3, heads, -1)[:, :, 2].transpose(1, 2)
        out = (full @ v).transpose(1, 2).reshape(batch, height, width, -1)
    # the captured pre-projection output is in window order on the shifted grid: map it back
    windows = pre_proj["x"].reshape(batch, -1, g.window[0] * g.window[1], out.shape[-1])
    index = window_token_index(g)
    expected = torch.empty(batch, height * width, out.shape[-1])
    expected[:, index.reshape(-1)] = windows.reshape(batch, -1, out.shape[-1])
    torch.testing.assert_close(out.reshape(batch, -1, out.shape[-1]), expected, atol=1e-5, rtol=1e-4)
    return g, full


@pytest.mark.parametrize("arch, blocks", [
    ("swin_fmnist_patch2_28", [(0, 0), (0, 1), (1, 0), (1, 1)]),
    ("swin_tiny_patch4_window7_224", [(0, 0), (0, 1), (2, 0), (2, 1), (3, 1)]),
    ("swin_base_patch4_window7_224", [(0, 1), (2, 0), (2, 5)]),
])
def test_full_attention_times_v_equals_block_output(arch, blocks):
    model = make(arch)
    size = model.pretrained_cfg["input_size"][-1]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    seen_shift = set()
    for stage, block in blocks:
        g, full = block_output_check(model, x, stage, block)
        seen_shift.add(g.shifted)
        torch.testing.assert_close(full.sum(-1), torch.ones_like(full.sum(-1)), atol=1e-5, rtol=0)
    assert seen_shift == {True, False}
    assert_no_hooks(model)


def test_unshifted_block_is_block_diagonal_after_window_permutation(embedded_swin):
    x = torch.randn(1, 3, 28, 28)
    full = full_attention(embedded_swin, x, 0, 0)
    g = BlockGeometry(grid=(14, 14), window=(7, 7), shift=(0, 0))
    order = window_token_index(g).reshape(-1)
    permuted = full[:, :, order][:, :, :, order]
    mask = torch.block_diag(*[torch.ones(49, 49)] * 4).bool()
    assert torch.all(permuted[..., ~mask] == 0)
    assert torch.all(permuted[..., mask] > 0)
    # a shifted block is not block-diagonal in that order
    shifted = full_attention(embedded_swin, x, 0, 1)[:, :, order][:, :, :, order]
    assert torch.any(shifted[..., ~mask] > 1e-6)


def test_window_index_by_hand():
    g = BlockGeometry(grid=(4, 4), window=(2, 2), shift=(1, 1))
    index = window_token_index(g)
    # window 0 covers shifted cells (0,0),(0,1),(1,0),(1,1) = original (1,1),(1,2),(2,1),(2,2)
    assert index[0].tolist() == [5, 6, 9, 10]
    # the last window wraps around: shifted (2,2)..(3,3) → original (3,3),(3,0),(0,3),(0,0)
    assert index[3].tolist() == [15, 12, 3, 0]
    assert sorted(index.reshape(-1).tolist()) == list(range(16))
    with pytest.raises(ValueError, match="not a multiple"):
        window_token_index(BlockGeometry(grid=(5, 4), window=(2, 2), shift=(0, 0)))


def test_merge_matrix_hand_example():
    m = merge_matrix((4, 4))
    assert m.shape == (4, 16)
    expected = torch.zeros(4, 16, dtype=torch.float64)
    for merged, sources in {0: [0, 1, 4, 5], 1: [2, 3, 6, 7], 2: [8, 9, 12, 13], 3: [10, 11, 14, 15]}.items():
        expected[merged, sources] = 0.25
    assert torch.equal(m, expected)
    with pytest.raises(ValueError, match="odd"):
        merge_matrix((3, 4))


def test_swin_rollout_sums_to_one_and_batches(embedded_swin):
    x = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, attention, geometry = window_attention(embedded_swin, x)
    relevance, progression = swin_rollout(attention, geometry, discard_ratio=0.0, normalize=True)
    assert relevance.shape == (2, 14, 14) and len(progression) == 2
    torch.testing.assert_close(relevance.sum(dim=(1, 2)), torch.ones(2, dtype=torch.float64))
    one, _ = swin_rollout({k: v[1:] for k, v in attention.items()}, geometry, discard_ratio=0.0, normalize=True)
    torch.testing.assert_close(relevance[1:], one)
    default, _ = swin_rollout(attention, geometry)
    # the default discards attention (ratio > 0): a different map, computed image by image as in a batch
    plain, _ = swin_rollout(attention, geometry, discard_ratio=0.0)
    assert default.shape == (2, 14, 14) and not torch.allclose(default, plain)
    alone, _ = swin_rollout({k: v[:1] for k, v in attention.items()}, geometry)
    torch.testing.assert_close(default[:1], alone)
    assert_no_hooks(embedded_swin)


def test_window_query_maps_by_hand():
    from generator.attention.windows import window_query_maps

    g = BlockGeometry(grid=(4, 4), window=(2, 2), shift=(1, 1))
    attn = torch.arange(4 * 4 * 4, dtype=torch.float64).reshape(1, 4, 1, 4, 4)  # batch, windows, heads, P, P
    maps, positions = window_query_maps(attn, g, (1, 0))  # slot 2 of each window
    index = window_token_index(g)
    for w in range(4):
        for k in range(4):
            r, c = divmod(int(index[w, k]), 4)
            assert maps[0, 0, r, c] == attn[0, w, 0, 2, k]
        assert positions[w].tolist() == list(divmod(int(index[w, 2]), 4))
    with pytest.raises(ValueError, match="outside"):
        window_query_maps(attn, g, (2, 0))
