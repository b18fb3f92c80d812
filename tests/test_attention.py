"""ViT attention capture against timm's own unfused softmax."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from generator.attention.capture import AttentionCaptureError, query_attention_maps, vit_attention, vit_token_layout


def reference_attention(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's own softmax output: fused attention off, hook attn_drop (its input is the softmax)."""
    saved = [blk.attn.fused_attn for blk in model.blocks]
    captured, handles = [], []
    try:
        for blk in model.blocks:
            blk.attn.fused_attn = False
            handles.append(blk.attn.attn_drop.register_forward_hook(lambda m, a, o: captured.append(a[0].clone())))
        with torch.no_grad():
            logits = model(x)
    finally:
        for h, blk, f in zip(handles, model.blocks, saved):
            h.remove()
            blk.attn.fused_attn = f
    return logits, torch.stack(captured)


def assert_no_hooks(model: torch.nn.Module) -> None:
    for name, module in model.named_modules():
        assert not module._forward_hooks, f"forward hook left on {name or 'model'}"
        assert not module._forward_pre_hooks, f"pre-hook left on {name or 'model'}"
        assert not getattr(module, "_forward_hooks_with_kwargs", {}), f"kwargs hook left on {name}"


def small_vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=7)
    return VisionTransformer(**{**args, **kwargs}).eval()


@pytest.fixture(scope="module")
def vit_base():
    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_224", pretrained=False).eval()


@pytest.mark.parametrize("fused", [True, False])
def test_vit_base_matches_timm_softmax(vit_base, fused):
    for blk in vit_base.blocks:
        blk.attn.fused_attn = fused
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = vit_base(x)
        logits, attn = vit_attention(vit_base, x)
    ref_logits, ref_attn = reference_attention(vit_base, x)
    assert attn.shape == (12, 2, 12, 197, 197)
    assert torch.equal(logits, plain), "capture changed the logits"
    torch.testing.assert_close(attn, ref_attn, atol=1e-5, rtol=0)
    torch.testing.assert_close(attn.sum(-1), torch.ones(12, 2, 12, 197), atol=1e-5, rtol=0)
    assert_no_hooks(vit_base)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"qk_norm": True},
        {"reg_tokens": 2},
        {"class_token": False, "global_pool": "avg"},
        {"img_size": (32, 48)},  # a non-square grid: 4×6
    ],
    ids=["plain", "qk-norm", "registers", "no-cls", "non-square"],
)
def test_small_vit_variants_match(kwargs):
    model = small_vit(**kwargs)
    if kwargs.get("qk_norm"):  # make the norms non-trivial
        for blk in model.blocks:
            torch.nn.init.normal_(blk.attn.q_norm.weight, 1.0, 0.3)
    h, w = (32, 48) if "img_size" in kwargs else (32, 32)
    x = torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = model(x)
        logits, attn = vit_attention(model, x)
    _, ref = reference_attention(model, x)
    assert torch.equal(logits, plain)
    torch.testing.assert_close(attn, ref, atol=1e-5, rtol=0)
    layout = vit_token_layout(model)
    assert attn.shape[-1] == layout.num_tokens
    assert layout.grid == (h // 8, w // 8)
    assert_no_hooks(model)


def test_distilled_model_prefix_tokens():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False).eval()
    layout = vit_token_layout(model)
    assert layout.prefix_names == ("CLS", "DIST")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        _, attn = vit_attention(model, x)
    maps = query_attention_maps(attn, layout, "cls")
    assert maps.shape == (12, 1, 3, 14, 14)
    torch.testing.assert_close(maps, attn[:, :, :, 0, 2:].reshape(12, 1, 3, 14, 14))


def test_batch_equals_single_images():
    model = small_vit()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, batched = vit_attention(model, x)
        singles = torch.cat([vit_attention(model, x[i : i + 1])[1] for i in range(3)], dim=1)
    torch.testing.assert_close(batched, singles, atol=1e-6, rtol=1e-5)


def test_hooks_removed_after_exception():
    model = small_vit()
    with pytest.raises(Exception):
        vit_attention(model, torch.randn(1, 3, 31, 17))  # wrong input size: patch embed raises
    assert_no_hooks(model)
    # and a second run does not stack duplicate captures
    with torch.no_grad():
        _, attn = vit_attention(model, torch.randn(1, 3, 32, 32))
    assert attn.shape[0] == len(model.blocks)
    assert_no_hooks(model)


def test_model_without_attention_blocks_raises():
    with pytest.raises(AttentionCaptureError, match="no transformer blocks"):
        vit_attention(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)), torch.randn(1, 3, 2, 2))


def test_query_maps_by_plain_indexing():
    model = small_vit(reg_tokens=1, img_size=(32, 48))
    layout = vit_token_layout(model)
    assert layout.prefix_names == ("CLS", "REG0")
    with torch.no_grad():
        _, attn = vit_attention(model, torch.randn(2, 3, 32, 48))
    blocks, batch, heads = attn.shape[:3]
    cls_maps = query_attention_maps(attn, layout, "cls")
    patch5 = query_attention_maps(attn, layout, 5)
    mean = query_attention_maps(attn, layout, "mean")
    for b in range(blocks):
        for n in range(batch):
            for h in range(heads):
                for i in range(4):
                    for j in range(6):
                        col = 2 + i * 6 + j
                        assert cls_maps[b, n, h, i, j] == attn[b, n, h, 0, col]
                        assert patch5[b, n, h, i, j] == attn[b, n, h, 2 + 5, col]
                        assert torch.isclose(mean[b, n, h, i, j], attn[b, n, h, 2:, col].mean())
    with pytest.raises(ValueError, match="outside"):
        query_attention_maps(attn, layout, 24)
    with pytest.raises(ValueError, match="unknown query"):
        query_attention_maps(attn, layout, "first")
    no_cls = small_vit(class_token=False, global_pool="avg")
    with torch.no_grad():
        _, attn2 = vit_attention(no_cls, torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="no class token"):
        query_attention_maps(attn2, vit_token_layout(no_cls), "cls")
