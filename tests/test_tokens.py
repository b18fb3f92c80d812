"""Registers and artifact tokens: the norms against the model's blocks run by hand, the outlier rule and
the register share on numbers written out by hand, the section on a tiny random DINOv2-with-registers
(headless) and on a ViT without class token, and the section in the shared gallery's pages."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import timm
import torch

import generator.analysis.findings as fi
from generator.attention.capture import TokenLayout
from generator.families import family_of
from generator.attention.token_norms import outlier_mask, token_stats

from .test_methods_registry import config, image, image_input, loaded

EPS = 1e-6


def reg_model(**kwargs) -> torch.nn.Module:
    """A tiny random DINOv2 with 4 registers: 56 px, patch 14 (a 4×4 grid), 3 blocks × 2 heads, headless."""
    torch.manual_seed(0)
    args = dict(img_size=56, depth=3, embed_dim=48, num_heads=2, num_classes=0, **kwargs)
    return timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, **args).eval()


def hand_block_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """timm's ViT forward written out as a plain loop over its blocks."""
    t = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    outputs = []
    for block in model.blocks:
        t = block(t)
        outputs.append(t)
    return outputs


def test_block_outputs_and_norms_match_the_blocks_run_by_hand():
    model = reg_model()
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    family = family_of(model)
    with torch.inference_mode():
        logits, attn, tokens = family.attention_and_outputs(model, x)
        by_hand = hand_block_outputs(model, x)
    assert tokens.shape == (3, 2, 5 + 16, 48) and attn.shape == (3, 2, 2, 21, 21) and logits.shape == (2, 48)
    for b, expected in enumerate(by_hand):
        torch.testing.assert_close(tokens[b], expected, rtol=0, atol=1e-6)
    st = token_stats(tokens, attn, family.token_layout(model), 4.0)
    norms = np.array([[[math.sqrt(sum(float(v) ** 2 for v in tok)) for tok in img] for img in out] for out in by_hand])
    np.testing.assert_allclose(st.norms, norms, rtol=1e-9)
    np.testing.assert_allclose(st.median_patch_norm, np.median(norms[..., 5:], axis=-1))
    assert all(not block._forward_hooks for block in model.blocks)


def test_block_output_hooks_are_removed_on_error():
    model = reg_model()
    with pytest.raises(RuntimeError, match="planted"):
        with family_of(model).block_output_capture(model):
            assert all(len(block._forward_hooks) == 1 for block in model.blocks)
            raise RuntimeError("planted")
    assert all(not block._forward_hooks for block in model.blocks)


def test_block_output_capture_fails_loudly_on_what_it_cannot_read():
    from generator.attention.capture import AttentionCaptureError
    from generator.attention.token_norms import capture_block_outputs

    class Pair(torch.nn.Module):  # a block that returns (tokens, extra), as some libraries' layers do
        def forward(self, x):
            return x, x

    block = Pair()
    with pytest.raises(AttentionCaptureError, match="not a \\(batch, tokens, channels\\) tensor"):
        with capture_block_outputs([block]):
            block(torch.zeros(1, 4, 2))
    assert not block._forward_hooks
    with pytest.raises(AttentionCaptureError, match="no blocks"):
        with capture_block_outputs([]):
            pass


def test_the_outlier_rule_is_strictly_above_factor_times_the_median():
    norms = np.array([[1.0, 1.0, 1.0, 2.0, 4.0, 4.0 + EPS, 9.0],  # median 2: above 8 only
                      [1.0, 1.0, 1.0, 1.0, 1.0, 4.0, 4.0 + EPS]])  # median 1: above 4 only
    np.testing.assert_array_equal(outlier_mask(norms, 4.0), [[0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1]])


def _softmax_rows(shape, seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).mul(3).softmax(-1)


def test_register_share_and_outlier_attention_are_the_hand_sums():
    layout = TokenLayout(prefix_names=("CLS", "REG0", "REG1"), grid=(2, 3))  # 3 prefix + 6 patches
    attn = _softmax_rows((2, 1, 2, 9, 9))  # blocks, batch, heads, tokens, tokens
    tokens = torch.ones(2, 1, 9, 4, dtype=torch.float64)
    tokens[0, 0, 3 + 4] = 10.0  # block 0's output: patch 4 (row 1, column 1) is an outlier (norm 20 vs 2)
    st = token_stats(tokens, attn, layout, 4.0)
    assert st.outliers[:, 0].tolist() == [[False] * 4 + [True, False], [False] * 6]
    mean = attn.mean(dim=2)[:, 0]  # blocks, tokens, tokens
    cls_hand = [float(mean[b, 0, 1] + mean[b, 0, 2]) for b in range(2)]
    patches_hand = [sum(float(mean[b, q, 1] + mean[b, q, 2]) for q in range(3, 9)) / 6 for b in range(2)]
    np.testing.assert_allclose(st.register_share["cls"][:, 0], cls_hand, rtol=1e-12)
    np.testing.assert_allclose(st.register_share["patches"][:, 0], patches_hand, rtol=1e-12)
    # block 1 reads block 0's output: its attention to patch 4 against the other five patches
    cls = st.attention["cls"]
    assert math.isnan(cls["per_outlier"][0, 0]) and math.isnan(cls["total"][0, 0])
    assert cls["per_outlier"][1, 0] == pytest.approx(float(mean[1, 0, 3 + 4]))
    assert cls["per_other"][1, 0] == pytest.approx(sum(float(mean[1, 0, 3 + i]) for i in (0, 1, 2, 3, 5)) / 5)
    per_query = [float(mean[1, q, 3 + 4]) for q in range(3, 9)]
    assert st.attention["patches"]["per_outlier"][1, 0] == pytest.approx(sum(per_query) / 6)


@pytest.mark.parametrize("delta, verdict", [(+EPS, "supported"), (-EPS, "contradicted")])
def test_high_norm_rule_flips_at_its_attention_ratio(delta, verdict):
    ratio = fi.OUTLIER_MIN_ATTENTION_RATIO + delta
    f = fi.high_norm_tokens([2, 0, 1], [0.1 * ratio, math.nan, 0.1 * ratio], [0.1, 0.05, 0.1], factor=4.0,
                            query="the class token")
    assert f.verdict == verdict and f.numbers["images_with_outliers"] == 2
    assert "In 2 of 3 images" in f.sentence and "4× the median" in f.sentence and "1.5 such patches" in f.sentence
    assert f"{0.1 * ratio:.1%} of the class token's attention" in f.sentence


def test_high_norm_rule_without_outliers_and_without_numbers():
    none = fi.high_norm_tokens([0, 0], [math.nan, math.nan], [0.1, 0.1], factor=4.0, query="the class token")
    assert none.verdict == "contradicted" and "any of the 2 images" in none.sentence
    assert fi.high_norm_tokens([], [], [], factor=4.0, query="q").verdict == "not testable"


@pytest.mark.parametrize("delta, verdict", [(+EPS, "supported"), (-EPS, "contradicted")])
def test_register_rule_flips_at_twice_the_registers_share_of_the_tokens(delta, verdict):
    share = fi.REGISTER_MIN_SHARE_RATIO * 4 / 21 + delta
    f = fi.registers_take_attention([share, share], registers=4, tokens=21, query="the class token")
    assert f.verdict == verdict and f"{share:.1%}" in f.sentence and "19.0%" in f.sentence
    assert fi.registers_take_attention([], registers=0, tokens=21, query="q").verdict == "not testable"


def test_section_on_a_headless_model_with_registers(tmp_path):
    from generator.sections.tokens import TokensSection

    model = loaded(reg_model(), "vit")
    assert not model.has("classifier-head") and model.has("attention-rows")
    section = TokensSection(config(tmp_path))
    assert section.applies_to(model)
    x = torch.randn(3, 56, 56, generator=torch.Generator().manual_seed(2))
    record = section.compute(model, image(), image_input(x))
    m = record.meta
    assert "top" not in m and m["registers"] == 4 and m["query"] == "cls" and m["grid"] == [4, 4]
    assert record.arrays["norms"].shape == (3, 21) and record.arrays["outliers"].shape == (3, 4, 4)
    assert [f["claim_id"] for f in m["findings"]] == ["tokens_high_norm", "tokens_register_attention"]
    assert m["findings"][1]["verdict"] != "not testable"
    share = m["per_block"][-1]["cls_register_share"]
    assert m["findings"][1]["numbers"]["share"] == pytest.approx(share)
    json.dumps(m, allow_nan=False)  # the data JSON holds no NaN
    assert set(section.render(record)) == {"", "shares"}
    assert list(section.tables(record)[""]["block"]) == [0, 1, 2]


def test_section_on_a_vit_without_class_token_reads_the_patch_queries(tmp_path):
    from generator.sections.tokens import TokensSection

    torch.manual_seed(0)
    module = timm.create_model("vit_fmnist_patch4_28", class_token=False, global_pool="avg", depth=2).eval()
    model = loaded(module, "vit")
    assert not model.has("class-token")
    record = TokensSection(config(tmp_path)).compute(model, image(), image_input(torch.randn(3, 28, 28)))
    m = record.meta
    assert m["query"] == "patches" and m["prefix_tokens"] == [] and m["registers"] == 0
    assert not any(key.startswith("cls_") for key in m["per_block"][0])
    assert "the mean patch query" in m["findings"][0]["sentence"] or m["findings"][0]["numbers"]["images_with_outliers"] == 0
    assert m["findings"][1]["verdict"] == "not testable" and "no register tokens" in m["findings"][1]["sentence"]


def test_shared_gallery_shows_the_section_for_the_vit_and_skips_the_swin(built_gallery):
    from generator.config.loading import load_config

    cfg = load_config(built_gallery.config)
    docs = cfg.output / "docs"
    report = json.loads((cfg.output / "run_report.json").read_text())
    skipped = {(s["section"], s["model"]): s["reason"] for s in report["not_applicable"]}
    assert "attention-rows" in skipped[("tokens", "Tiny Swin")]
    data = json.loads((docs / "data" / "tokens" / "tiny-vit" / "synthetic-0.json").read_text())["result"]
    assert data["outlier_factor"] == 4.0 and data["blocks"] == 6 and len(data["per_block"]) == 6
    assert (docs / "figures" / "tokens" / "tiny-vit" / "synthetic-0.csv").is_file()
    chapter = (docs / "chapters" / "registers-and-artifact-tokens.md").read_text(encoding="utf-8")
    assert 'data-claim="tokens_high_norm"' in chapter and 'data-claim="tokens_register_attention"' in chapter
    assert "figures/tokens/tiny-vit/synthetic-0.png" in chapter and "figures/tokens-shares/tiny-vit/" in chapter
    assert "<b>x&y" not in chapter  # the hostile class names and image name are escaped
    page = (docs / "images" / "synthetic-0.md").read_text(encoding="utf-8")
    assert "## Registers and artifact tokens" in page and 'data-claim="tokens_high_norm"' in page
