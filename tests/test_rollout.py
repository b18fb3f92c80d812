"""Rollout against plain-loop references, its algebraic properties, and the gradient variant
against finite differences through a hand-written forward pass."""

from __future__ import annotations

import itertools

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from generator.attention.capture import vit_attention, vit_attention_gradients, vit_token_layout
from generator.attention.rollout import attention_rollout, gradient_rollout, rollout_mask, rollout_progression


def random_attention(blocks=4, batch=3, heads=3, tokens=7, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(blocks, batch, heads, tokens, tokens, generator=g, dtype=torch.float64) * 2
    return logits.softmax(-1)


def loop_rollout(attn, fusion, discard, start, normalize):
    """Plain Python loops, no vectorisation: the independent reference."""
    blocks, batch, heads, T, _ = attn.shape
    out = []
    for n in range(batch):
        R = [[1.0 if i == j else 0.0 for j in range(T)] for i in range(T)]
        for b in range(start, blocks):
            A = [[0.0] * T for _ in range(T)]
            for i in range(T):
                for j in range(T):
                    vals = [float(attn[b, n, h, i, j]) for h in range(heads)]
                    A[i][j] = {"mean": sum(vals) / heads, "max": max(vals), "min": min(vals)}[fusion]
            k = int(discard * T * T)
            entries = sorted(((A[i][j], i * T + j) for i in range(T) for j in range(T)), key=lambda e: (e[0], e[1]))
            for value, flat in entries[:k]:
                i, j = divmod(flat, T)
                if (i, j) != (0, 0):
                    A[i][j] = 0.0
            for i in range(T):
                A[i][i] += 1.0
                if normalize:
                    s = sum(A[i])
                    A[i] = [a / s for a in A[i]]
            R = [[sum(A[i][m] * R[m][j] for m in range(T)) for j in range(T)] for i in range(T)]
        out.append(R)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize(
    "fusion, discard, start, normalize",
    [("mean", 0.9, 1, False), ("max", 0.5, 0, True), ("min", 0.0, 2, False), ("mean", 0.3, 0, True)],
)
def test_matches_plain_loop(fusion, discard, start, normalize):
    attn = random_attention()
    got = attention_rollout(attn, head_fusion=fusion, discard_ratio=discard, start_block=start, normalize=normalize)
    torch.testing.assert_close(got, loop_rollout(attn, fusion, discard, start, normalize), rtol=1e-10, atol=1e-12)


def test_cls_entry_is_never_discarded_and_not_replaced():
    attn = random_attention(blocks=1, batch=1, heads=1, tokens=4)
    attn[0, 0, 0, 0, 0] = attn[0, 0, 0].min() / 2  # the CLS-CLS entry is the smallest, and not zero
    R = attention_rollout(attn, discard_ratio=0.5, start_block=0)
    fused = attn[0, 0, 0]
    # 8 of 16 entries are the lowest; CLS-CLS is one of them and stays, the other 7 are zeroed
    A = R[0] - torch.eye(4, dtype=R.dtype)
    order = fused.flatten().argsort(stable=True)
    assert order[0] == 0 and fused[0, 0] > 0
    assert torch.all(A.flatten()[order[1:8]] == 0)
    assert int((A == 0).sum()) == 7
    kept = torch.cat([order[:1], order[8:]])
    torch.testing.assert_close(A.flatten()[kept], fused.flatten()[kept], rtol=0, atol=1e-15)


def test_rows_sum_to_one_with_normalize_and_no_discard():
    R = attention_rollout(random_attention(), discard_ratio=0.0, normalize=True, start_block=0)
    torch.testing.assert_close(R.sum(-1), torch.ones(3, 7, dtype=R.dtype))


def test_identity_attention_gives_multiple_of_identity():
    eye = torch.eye(5, dtype=torch.float64).expand(3, 2, 4, 5, 5).clone()
    R = attention_rollout(eye, discard_ratio=0.0, start_block=1)
    torch.testing.assert_close(R, (2.0**2) * torch.eye(5, dtype=torch.float64).expand(2, 5, 5))


def test_batch_of_two_equals_two_batches_of_one():
    attn = random_attention(batch=2)
    for fusion, discard in itertools.product(("mean", "max", "min"), (0.0, 0.9)):
        both = attention_rollout(attn, head_fusion=fusion, discard_ratio=discard)
        one = torch.cat([attention_rollout(attn[:, i : i + 1], head_fusion=fusion, discard_ratio=discard)
                         for i in range(2)])
        torch.testing.assert_close(both, one, rtol=0, atol=0)


def test_progression_ends_in_the_full_mask_and_grid_is_not_square():
    attn = random_attention(tokens=1 + 2 * 3)
    masks = rollout_progression(attn, grid=(2, 3), prefix_tokens=1, start_block=1)
    assert masks.shape == (3, 3, 2, 3)
    full = rollout_mask(attention_rollout(attn), grid=(2, 3))
    torch.testing.assert_close(masks[-1], full)
    torch.testing.assert_close(full[1, 1, 2], attention_rollout(attn)[1, 0, 1 + 1 * 3 + 2])


@pytest.mark.parametrize(
    "kwargs, name",
    [({"discard_ratio": 1.0}, "discard_ratio"), ({"discard_ratio": -0.1}, "discard_ratio"),
     ({"start_block": 4}, "start_block"), ({"start_block": -1}, "start_block"),
     ({"head_fusion": "median"}, "head_fusion")],
)
def test_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        attention_rollout(random_attention(), **kwargs)


# --------------------------------------------------------------------------- gradient-weighted


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(img_size=8, patch_size=4, embed_dim=8, depth=2, num_heads=2, num_classes=3,
                              mlp_ratio=2.0)
    return model.double().eval()


def manual_forward(model: VisionTransformer, x: torch.Tensor, attn_override: list[torch.Tensor]) -> torch.Tensor:
    """A ViT forward written out by hand, using the given attention matrices instead of softmax."""
    tokens = model.patch_embed(x)
    tokens = model._pos_embed(tokens)
    for block, A in zip(model.blocks, attn_override):
        h = block.norm1(tokens)
        B, N, C = h.shape
        v = block.attn.qkv(h).reshape(B, N, 3, block.attn.num_heads, -1).permute(2, 0, 3, 1, 4)[2]
        out = (A @ v).transpose(1, 2).reshape(B, N, C)
        tokens = tokens + block.attn.proj(out)
        tokens = tokens + block.mlp(block.norm2(tokens))
    tokens = model.norm(tokens)
    return model.head(tokens[:, 0])


def test_gradient_rollout_matches_finite_differences():
    model = tiny_vit()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    logits, attn, grads = vit_attention_gradients(model, x)
    target = int(logits.argmax())
    # the hand-written forward with the captured attention reproduces the logits
    torch.testing.assert_close(manual_forward(model, x, list(attn)), logits)
    eps = 1e-6
    fd = torch.zeros_like(attn)
    with torch.no_grad():
        for index in itertools.product(*(range(s) for s in attn.shape)):
            plus, minus = attn.clone(), attn.clone()
            plus[index] += eps
            minus[index] -= eps
            fd[index] = (manual_forward(model, x, list(plus))[0, target]
                         - manual_forward(model, x, list(minus))[0, target]) / (2 * eps)
    torch.testing.assert_close(grads, fd, atol=1e-6, rtol=1e-5)
    # brute-force rollout from the finite-difference gradients, with loops
    T = attn.shape[-1]
    R = torch.eye(T, dtype=torch.float64)
    for b in range(attn.shape[0]):
        cam = torch.zeros(T, T, dtype=torch.float64)
        for h in range(attn.shape[2]):
            cam += torch.clamp(fd[b, 0, h] * attn[b, 0, h], min=0) / attn.shape[2]
        R = (cam + torch.eye(T, dtype=torch.float64)) @ R
    torch.testing.assert_close(gradient_rollout(attn, grads)[0], R, atol=1e-6, rtol=1e-5)
    # the captured attention is timm's softmax, and no hooks or flags are left changed
    with torch.no_grad():
        _, plain = vit_attention(model, x)
    torch.testing.assert_close(attn, plain)
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert vit_token_layout(model).grid == (2, 2)
