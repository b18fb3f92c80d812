"""timm's own architectures, one model of every family, tiny and with random weights: each family's
captured attention against an independent reference from the module's weights, and one CLI build
of them all (headless backbones, no class token, registers, RoPE, relative and continuous bias)."""

from __future__ import annotations

import html
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from generator.families import family_of

from .conftest import write_synthetic_images

#: One tiny model per family and token layout: (timm architecture, create_model kwargs).
ZOO: dict[str, tuple[str, dict]] = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)),
    "deit-distilled": ("deit_tiny_distilled_patch16_224",
                       dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)),
    "dinov2-registers": ("vit_small_patch14_reg4_dinov2", dict(img_size=28, depth=2, embed_dim=32, num_heads=2)),
    "siglip": ("vit_base_patch16_siglip_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)),
    "gap": ("vit_medium_patch16_gap_256", dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)),
    "clip": ("vit_base_patch16_clip_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)),
    "eva02": ("eva02_tiny_patch14_224", dict(img_size=28, depth=2, embed_dim=32, num_heads=2)),
    "beit": ("beit_base_patch16_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)),
    "swin": ("swin_tiny_patch4_window7_224",
             dict(img_size=32, embed_dim=16, depths=(2, 1), num_heads=(1, 2), window_size=4)),
    "swinv2": ("swinv2_tiny_window8_256", dict(img_size=32, embed_dim=16, depths=(2, 1), num_heads=(1, 2),
                                               window_size=4)),
}


def tiny(name: str) -> torch.nn.Module:
    """The zoo's model, every parameter moved off timm's init (zero biases and tables would make a
    missing bias pass), one SwinV2 logit scale above its clamp."""
    arch, kwargs = ZOO[name]
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
        for module in model.modules():
            if hasattr(module, "logit_scale") and isinstance(module.logit_scale, torch.nn.Parameter):
                module.logit_scale[0] = 6.0  # exp(6) > 100: the clamp at log(100) must apply
    return model


def attention_inputs(model: torch.nn.Module, modules: list[torch.nn.Module], x: torch.Tensor) -> list[tuple]:
    """(args, kwargs) each attention module received in one plain forward pass."""
    seen: list = [None] * len(modules)
    handles = [m.register_forward_pre_hook(lambda _m, a, k, i=i: seen.__setitem__(i, (a, k)), with_kwargs=True)
               for i, m in enumerate(modules)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def q_k(attn: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, heads, N, d) queries and keys from the module's weights; q/v biases as timm keeps them (k has none)."""
    b, n, _ = x.shape
    weight = attn.qkv.weight
    if getattr(attn, "q_bias", None) is not None:
        bias = torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
    else:
        bias = attn.qkv.bias
    qkv = (x @ weight.T + (0 if bias is None else bias)).reshape(b, n, 3, attn.num_heads, -1)
    return qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)


def softmax_rows(scores: torch.Tensor) -> torch.Tensor:
    """exp(s − max) / Σ exp(s − max), written out."""
    e = (scores - scores.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def table_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(heads, N, N): the table's row for every (query, key) pair's relative position index."""
    n = index.shape[0]
    return table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)


def global_reference(name: str, model, x) -> torch.Tensor:
    """(blocks, B, heads, N, N): softmax(q·kᵀ/√d + the family's bias), q and k rotated for EVA."""
    from timm.layers import apply_rot_embed_cat

    modules = [b.attn for b in model.blocks]
    out = []
    for attn, (args, kwargs) in zip(modules, attention_inputs(model, modules, x)):
        h = args[0]
        q, k = q_k(attn, h)
        q, k = attn.q_norm(q) if hasattr(attn, "q_norm") else q, attn.k_norm(k) if hasattr(attn, "k_norm") else k
        if kwargs.get("rope") is not None:  # EVA: timm's own rotation of the patch tokens (the reference's RoPE)
            p = model.num_prefix_tokens
            q = torch.cat([q[:, :, :p], apply_rot_embed_cat(q[:, :, p:], kwargs["rope"])], dim=2)
            k = torch.cat([k[:, :, :p], apply_rot_embed_cat(k[:, :, p:], kwargs["rope"])], dim=2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        if getattr(attn, "relative_position_bias_table", None) is not None:  # BEiT
            scores = scores + table_bias(attn.relative_position_bias_table, attn.relative_position_index)
        if kwargs.get("shared_rel_pos_bias") is not None:
            scores = scores + kwargs["shared_rel_pos_bias"]
        out.append(softmax_rows(scores))
    return torch.stack(out)


def window_reference(name: str, model, x) -> dict:
    """(stage, block) → (B·windows, heads, w², w²): Swin's scaled q·kᵀ plus its table bias, or SwinV2's
    cosine similarity times the clamped logit scale plus 16·sigmoid of the bias MLP; plus the shift mask."""
    keys = [(s, b) for s, stage in enumerate(model.layers) for b in range(len(stage.blocks))]
    modules = [model.layers[s].blocks[b].attn for s, b in keys]
    out = {}
    for key, attn, (args, kwargs) in zip(keys, modules, attention_inputs(model, modules, x)):
        h = args[0]
        mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
        q, k = q_k(attn, h)
        if name == "swinv2":
            cos = (q / q.norm(dim=-1, keepdim=True)) @ (k / k.norm(dim=-1, keepdim=True)).transpose(-2, -1)
            scores = cos * attn.logit_scale.clamp(max=math.log(100.0)).exp()
            first, second = attn.cpb_mlp[0], attn.cpb_mlp[2]
            table = torch.relu(attn.relative_coords_table @ first.weight.T + first.bias) @ second.weight.T
            scores = scores + 16 * torch.sigmoid(table_bias(table.reshape(-1, attn.num_heads),
                                                            attn.relative_position_index))
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            scores = scores + table_bias(attn.relative_position_bias_table, attn.relative_position_index)
        if mask is not None:
            windows = mask.shape[0]
            scores = (scores.reshape(-1, windows, *scores.shape[1:]) + mask[None, :, None]).reshape(scores.shape)
        out[key] = softmax_rows(scores)
    return out


@pytest.mark.parametrize("name", list(ZOO))
def test_captured_attention_equals_an_independent_reference(name):
    model = tiny(name)
    family = family_of(model)
    size = ZOO[name][1]["img_size"]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    fused = [m.fused_attn for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    with torch.no_grad():
        plain = model(x)
        if "windows" in family.capabilities:
            logits, captured, _ = family.window_attention(model, x)
            reference = window_reference(name, model, x)
            assert set(captured) == set(reference)
            pairs = [(captured[k].reshape(reference[k].shape), reference[k]) for k in reference]
        else:
            logits, captured = family.attention(model, x)
            pairs = [(captured, global_reference(name, model, x))]
    for got, want in pairs:
        assert torch.allclose(got, want, atol=2e-5, rtol=1e-4), (got - want).abs().max()
        assert torch.allclose(got.sum(-1), torch.ones(()), atol=1e-5)
    assert torch.allclose(logits, plain, atol=1e-4)
    if "attention-rows" in family.capabilities and model.num_classes:  # gradient rollout's pass, on the same softmax
        from generator.attention.capture import vit_attention_gradients

        _, used, grads = vit_attention_gradients(model, x)
        assert torch.allclose(used, pairs[0][1], atol=2e-5, rtol=1e-4) and grads.shape == used.shape
        assert grads.abs().sum() > 0
    # nothing left behind: hooks removed, timm's fused attention as it was
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
    assert [m.fused_attn for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)] == fused


def test_families_and_layouts_as_timm_declares_them():
    expected = {"vit": ("vit", ("CLS",)), "deit-distilled": ("vit", ("CLS", "DIST")),
                "dinov2-registers": ("vit", ("CLS", "REG0", "REG1", "REG2", "REG3")), "siglip": ("vit", ()),
                "gap": ("vit", ()), "clip": ("vit", ("CLS",)), "eva02": ("eva", ("CLS",)),
                "beit": ("beit", ("CLS",)), "swin": ("swin", ()), "swinv2": ("swinv2", ())}
    for name, (family_name, prefix) in expected.items():
        model = tiny(name)
        family = family_of(model)
        assert family.name == family_name, name
        layout = family.token_layout(model)
        assert layout.prefix_names == prefix, name
        assert layout.num_prefix_tokens == getattr(model, "num_prefix_tokens", 0), name
        have = family.model_capabilities(model)
        assert ("classifier-head" in have) == (model.num_classes > 0), name
        assert ("class-token" in have) == (getattr(model, "cls_token", None) is not None), name


def test_query_auto_reads_the_class_token_or_the_mean_patch_row():
    from generator.attention.capture import query_attention_maps
    from generator.sections.common import resolve_query

    for name, want in (("vit", "cls"), ("siglip", "mean"), ("dinov2-registers", "cls")):
        model = tiny(name)
        layout = family_of(model).token_layout(model)
        assert resolve_query("auto", layout) == want, name
    model = tiny("siglip")
    layout = family_of(model).token_layout(model)
    with torch.no_grad():
        _, attn = family_of(model).attention(model, torch.randn(1, 3, 32, 32))
    maps = query_attention_maps(attn, layout, resolve_query("auto", layout))
    by_hand = attn.mean(dim=-2).reshape(maps.shape)  # no prefix tokens: every row is a patch query
    assert torch.allclose(maps, by_hand)


@pytest.mark.parametrize("name", ["deit-distilled", "dinov2-registers", "siglip", "eva02", "beit", "swinv2"])
def test_attention_statistics_of_every_family(name):
    """The statistics section's compute on every family: finite distances and entropies per block and head."""
    import numpy as np

    from generator.attention.stats import swin_attention_stats, vit_attention_stats

    model = tiny(name)
    size = ZOO[name][1]["img_size"]
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(2))
    if "windows" in family_of(model).capabilities:
        stats = swin_attention_stats(model, x)
        assert len(stats.blocks) == sum(len(stage.blocks) for stage in model.layers)
        values = [b.mean_distance for b in stats.blocks.values()] + [b.bias_correlation for b in stats.blocks.values()]
    else:
        stats = vit_attention_stats(model, x)
        assert stats.mean_distance.shape == (3, len(model.blocks), model.blocks[0].attn.num_heads)
        values = [stats.mean_distance, stats.entropy, stats.positional]
        assert np.isnan(stats.cls_concentration).all() == (getattr(model, "cls_token", None) is None)
    assert all(np.isfinite(v).all() for v in values)


# --------------------------------------------------------------------------- one build of every family


def _model_entry(label: str, name: str, seed: int, extra: str = "") -> str:
    arch, kwargs = ZOO[name]
    kwargs = dict(kwargs)
    size = kwargs.pop("img_size")
    timm_kwargs = ", ".join(f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in kwargs.items())
    return (f'[[models]]\nname = "{label}"\narch = "{arch}"\nweights = "random:{seed}"\nimg_size = {size}\n'
            f"timm_kwargs = {{ {timm_kwargs} }}\n{extra}")


#: The build's models: every family and token layout (the plain class-token ViT is every other test's).
ZOO_MODELS = [("DeiT", "deit-distilled", ""), ("DINOv2-reg", "dinov2-registers", ""), ("SigLIP", "siglip", ""),
              ("ViT-GAP", "gap", ""), ("CLIP", "clip", "num_classes = 0\n"), ("EVA-02", "eva02", "num_classes = 10\n"),
              ("BEiT", "beit", ""), ("Swin", "swin", ""), ("SwinV2", "swinv2", "")]
FAMILIES = {"DeiT": "vit", "DINOv2-reg": "vit", "SigLIP": "vit", "ViT-GAP": "vit", "CLIP": "vit", "EVA-02": "eva",
            "BEiT": "beit", "Swin": "swin", "SwinV2": "swinv2"}
HEADLESS = ("DINOv2-reg", "SigLIP", "CLIP")


def test_one_build_explains_every_family(tmp_path):
    """Attention sections for every model; Grad-CAM where there is a head; the sections that need a class
    skipped for the headless ones, with the reason in the run report and on the page (LIME, perturbation
    and faithfulness are off here for time: their skips are the next test's; the statistics, one pass
    over the image set whatever the section, are test_attention_statistics_of_every_family's)."""
    write_synthetic_images(tmp_path / "images", count=1, size=32)
    models = "\n".join(_model_entry(label, name, seed, extra) for seed, (label, name, extra) in enumerate(ZOO_MODELS))
    only_grad_cam = "".join(f"[methods.{m}]\nenabled = false\n" for m in (
        "lime", "kernel-shap", "integrated-gradients", "smoothgrad", "occlusion", "score-cam", "eigencam", "hirescam",
        "grad-cam-plusplus", "lrp", "rollout", "gradient-rollout", "cls-attention", "swin-rollout",
        "swin-window-attention"))
    config = tmp_path / "zoo.toml"
    config.write_text(f"""
title = "Every family"
images = "images"
output = "build"
site_dir = "site"

{models}
[run]
dpi = 50

[sections.rollout]
fusions = ["mean"]
gradient = false

[sections.swin]
targets = [[1, 2]]

[sections.stats]
enabled = false

[sections.lime]
enabled = false

[sections.perturb]
enabled = false

[sections.probe]
enabled = false

[sections.faithfulness]
enabled = false

{only_grad_cam}
""", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "generator", "build", "--config", str(config), "--quiet", "--no-site"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((tmp_path / "build" / "run_report.json").read_text())
    assert {m["name"]: m["family"] for m in report["models"]} == FAMILIES
    data = tmp_path / "build" / "docs" / "data"
    slugs = {m["name"]: m["slug"] for m in report["models"]}
    ran = {(section.name, model.name) for section in data.iterdir() for model in section.iterdir()}
    for name, family in FAMILIES.items():
        attention = {"swin"} if family in ("swin", "swinv2") else {"heads", "rollout"}
        for section in attention | {"explorer"}:
            assert (section, slugs[name]) in ran, (section, name)
        if name not in HEADLESS:  # a head: the CAM runs
            maps = json.loads((data / "maps" / slugs[name] / "synthetic-0.json").read_text())
            assert [m["title"] for m in maps["result"]["methods"]] == ["Grad-CAM"], name
    skipped = {(s["section"], s["model"]): s["reason"] for s in report["not_applicable"]}
    for name in HEADLESS:
        assert "classifier-head" in skipped[("maps", name)], name
    # no class token: the mean patch query, in the record and its caption; registers left out of the grid
    heads = json.loads((data / "heads" / slugs["SigLIP"] / "synthetic-0.json").read_text())["result"]
    assert heads["query"] == "mean" and heads["top"] == []
    rollout = json.loads((data / "rollout" / slugs["SigLIP"] / "synthetic-0.json").read_text())["result"]
    assert rollout["query"] == "mean"
    dino = json.loads((data / "heads" / slugs["DINOv2-reg"] / "synthetic-0.json").read_text())["result"]
    assert dino["query"] == "cls" and dino["left_out_tokens"] == ["CLS", "REG0", "REG1", "REG2", "REG3"]
    page = html.unescape((tmp_path / "build" / "docs" / "images" / "synthetic-0.md").read_text(encoding="utf-8"))
    assert "No class prediction: a headless backbone" in page
    assert "Not shown for DINOv2-reg (random weights): needs classifier-head" in page
    assert "rollout of the mean patch row (the model has no class token)" in page
    index = html.unescape((tmp_path / "build" / "docs" / "index.md").read_text(encoding="utf-8"))
    assert "| 28×28 px |" in index and "none (headless)" in index


def test_a_headless_backbone_is_skipped_by_every_section_that_needs_a_class(tmp_path):
    from generator.config.loading import load_config
    from generator.models.loaded import load_model
    from generator.pipeline.plan import not_applicable
    from generator.sections import SECTIONS

    (tmp_path / "images").mkdir()
    config = tmp_path / "g.toml"
    config.write_text('title = "t"\nimages = "images"\n' + _model_entry("DINOv2-reg", "dinov2-registers", 0),
                      encoding="utf-8")
    gallery = load_config(config)
    model = load_model(gallery.models[0])
    assert model.input_size == (28, 28)
    reasons = {s.section: s.reason for s in not_applicable(model, [cls(gallery) for cls in SECTIONS])}
    for section in ("lime", "maps", "perturb", "faithfulness"):
        assert reasons[section] == ("needs classifier-head (a classifier head on pooled tokens), "
                                    "which this vit model lacks"), section
    assert not {"heads", "rollout", "stats", "explorer"} & set(reasons)


def test_img_size_resamples_checkpoint_position_embeddings(tmp_path):
    """A checkpoint made at 56 px loads through timm's pretrained-file path at 28 px: the position
    embeddings are resampled by timm's filter, and the data config's input size follows."""
    from safetensors.torch import save_file

    from generator.models.loading import load_module
    from generator.config.settings import ModelConfig

    arch, kwargs = ZOO["dinov2-registers"]
    small = {k: v for k, v in kwargs.items() if k != "img_size"}
    torch.manual_seed(0)
    trained = timm.create_model(arch, pretrained=False, img_size=56, **small)
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, tmp_path / "w.safetensors")
    config = ModelConfig(name="DINOv2", arch=arch, weights=f"file:{tmp_path / 'w.safetensors'}", img_size=28,
                         timm_kwargs=small)
    module, identity = load_module(config)
    assert identity.data_config["input_size"] == (3, 28, 28)
    assert tuple(module.patch_embed.grid_size) == (2, 2) and module.pos_embed.shape[1] == 4  # no prefix positions
    assert torch.equal(module.blocks[0].attn.qkv.weight, trained.blocks[0].attn.qkv.weight)
    resampled = F.interpolate(trained.pos_embed.reshape(1, 4, 4, -1).permute(0, 3, 1, 2), size=(2, 2),
                              mode="bicubic", antialias=True).permute(0, 2, 3, 1).reshape(1, 4, -1)
    assert torch.allclose(module.pos_embed, resampled, atol=1e-5)
