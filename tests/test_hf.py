"""Hugging Face transformers models (``hf:``): tiny save_pretrained checkpoints of every supported kind,
loaded through the real from_pretrained path; the models' own ``output_attentions=True`` and a timm ViT
with the same weights are the oracles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from generator.families import family_of  # noqa: E402
from generator.models.identity import WeightsError  # noqa: E402
from generator.models.loading import load_module  # noqa: E402
from generator.config.settings import ModelConfig  # noqa: E402

from .conftest import ROOT, TINY_DEFAULT_TABLES, write_synthetic_images  # noqa: E402
from .hf_tiny import KINDS, LABELS, save_tiny  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: save_tiny(kind, root / kind, seed=i) for i, kind in enumerate(KINDS)}


def _load(folder: Path, weights: str | None = None):
    return load_module(ModelConfig(name="m", arch=f"hf:tiny/{folder.name}", weights=weights or f"file:{folder}"))


def _hooks(module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.mark.parametrize("kind", KINDS)
def test_captured_attention_is_the_models_own_output_attentions(checkpoints, kind):
    module, identity = _load(checkpoints[kind])
    adapter = family_of(module)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    hf = module.hf
    implementation = hf.config._attn_implementation
    with torch.no_grad():
        hf.set_attn_implementation("eager")
        reference = hf(pixel_values=x, output_attentions=True)  # transformers keeps hooks of its own from here
        hf.set_attn_implementation(implementation)
        before = _hooks(module)
        if "windows" in identity.capabilities:
            logits, attention, geometry = adapter.window_attention(module, x)
        else:
            logits, attn = adapter.attention(module, x)
    assert hf.config._attn_implementation == implementation != "eager"  # eager only for the capture
    assert _hooks(module) == before
    expected = reference.logits if module.num_classes else module(x)
    torch.testing.assert_close(logits, expected)
    if "windows" in identity.capabilities:
        # transformers records the last block of every stage; the capture has every block
        last = {s: max(b for t, b in attention if t == s) for s, _ in attention}
        assert len(reference.attentions) == len(last)
        for stage, block in sorted(last.items()):
            captured = attention[(stage, block)]
            torch.testing.assert_close(captured.flatten(0, 1), reference.attentions[stage], rtol=0, atol=0)
        assert len(attention) == len(adapter.window_geometry(module))
        for key, g in geometry.items():
            assert (g.window, g.shift) == adapter.window_geometry(module)[key]
    else:
        torch.testing.assert_close(attn, torch.stack(reference.attentions), rtol=0, atol=0)
        layout = adapter.token_layout(module)
        assert attn.shape[-1] == layout.num_tokens
        assert layout.prefix_names == {"deit": ("CLS", "DIST"),
                                       "dinov2-registers": ("CLS", "REG0", "REG1")}.get(kind, ("CLS",))


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "swin"])
def test_block_outputs_are_the_models_own_hidden_states(checkpoints, kind):
    """The tokens section's per-block output tokens are what transformers records as hidden states."""
    module, _ = _load(checkpoints[kind])
    adapter = family_of(module)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = module.hf(pixel_values=x, output_hidden_states=True).hidden_states
        before = _hooks(module)
        _, attn, tokens = adapter.attention_and_outputs(module, x)
    assert _hooks(module) == before
    assert tokens.shape[0] == attn.shape[0] == len(reference) - 1
    # the capture pass runs eager attention, the reference transformers' default kernel: float rounding apart
    torch.testing.assert_close(tokens, torch.stack(reference[1:]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_identity_from_the_processor_and_id2label(checkpoints, kind):
    module, identity = _load(checkpoints[kind])
    processor = transformers.AutoImageProcessor.from_pretrained(checkpoints[kind])
    assert identity.data_config["mean"] == tuple(processor.image_mean)
    assert identity.data_config["input_size"] == (3, 32, 32)
    headless = kind == "dinov2"
    assert identity.class_names == (() if headless else LABELS)
    assert ("classifier-head" in identity.capabilities) is not headless
    assert "lrp" not in identity.capabilities
    assert identity.family == ("hf-swin" if kind == "swin" else "hf-vit")
    # the same weights load to the same hash; random:SEED from the folder's config to another, seeded
    assert _load(checkpoints[kind])[1].weights_sha256 == identity.weights_sha256
    random_a = load_module(ModelConfig(name="r", arch=f"hf:{checkpoints[kind]}", weights="random:3"))[1]
    random_b = load_module(ModelConfig(name="r", arch=f"hf:{checkpoints[kind]}", weights="random:3"))[1]
    assert random_a.weights_sha256 == random_b.weights_sha256 != identity.weights_sha256
    assert random_a.random_weights


def test_preprocessing_follows_the_processor(checkpoints):
    """The data config reproduces the processor's squash resize and centre crop (DeiT: 36×36, crop 32)."""
    from generator.models.loading import preprocess

    _module, identity = _load(checkpoints["deit"])
    processor = transformers.AutoImageProcessor.from_pretrained(checkpoints["deit"])
    rgb = np.random.default_rng(0).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)

    class Model:
        data_config = identity.data_config

    _view, x = preprocess(Model, rgb)
    expected = processor(images=rgb, return_tensors="pt")["pixel_values"][0]
    assert x.shape == expected.shape
    assert float((x - expected).abs().mean()) < 0.02  # PIL vs the processor's resize kernels


# --------------------------------------------------------------------------- timm ↔ transformers ViT


def _timm_vit_as_hf(vit, folder: Path) -> Path:
    """Copy a timm VisionTransformer's weights into a ViTForImageClassification of the same shape; save it."""
    sd = vit.state_dict()
    dim = vit.embed_dim
    config = transformers.ViTConfig(hidden_size=dim, num_hidden_layers=len(vit.blocks),
                                    num_attention_heads=vit.blocks[0].attn.num_heads,
                                    intermediate_size=vit.blocks[0].mlp.fc1.out_features, image_size=32, patch_size=8,
                                    layer_norm_eps=1e-6, hidden_act="gelu", num_labels=vit.num_classes)
    out = {"vit.embeddings.cls_token": sd["cls_token"], "vit.embeddings.position_embeddings": sd["pos_embed"],
           "vit.embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "vit.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "vit.layernorm.weight": sd["norm.weight"], "vit.layernorm.bias": sd["norm.bias"],
           "classifier.weight": sd["head.weight"], "classifier.bias": sd["head.bias"]}
    for i in range(len(vit.blocks)):
        t, h = f"blocks.{i}.", f"vit.layers.{i}."
        for name in ("q", "k", "v"):
            j = "qkv".index(name)
            out[f"{h}attention.{name}_proj.weight"] = sd[t + "attn.qkv.weight"][j * dim:(j + 1) * dim]
            out[f"{h}attention.{name}_proj.bias"] = sd[t + "attn.qkv.bias"][j * dim:(j + 1) * dim]
        pairs = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.o_proj",
                 "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
        for a, b in pairs.items():
            out[f"{h}{b}.weight"], out[f"{h}{b}.bias"] = sd[f"{t}{a}.weight"], sd[f"{t}{a}.bias"]
    model = transformers.ViTForImageClassification(config)
    missing, unexpected = model.load_state_dict(out, strict=False)
    assert not unexpected and not [k for k in missing if "pooler" not in k], (missing, unexpected)
    model.save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_a_vit_converted_between_the_libraries_explains_alike(tmp_path):
    import timm

    from generator.relevance.cam import gradcam
    from generator.attention.rollout import attention_rollout, rollout_mask

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                            num_classes=3, pretrained=False).eval()
    module, _ = _load(_timm_vit_as_hf(vit, tmp_path / "vit"))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(module(x), vit(x), rtol=1e-4, atol=1e-5)  # the conversion first
        _, timm_attn = family_of(vit).attention(vit, x)
        _, hf_attn = family_of(module).attention(module, x)
    torch.testing.assert_close(hf_attn, timm_attn, rtol=1e-4, atol=1e-5)
    layouts = family_of(vit).token_layout(vit), family_of(module).token_layout(module)
    assert layouts[0] == layouts[1]
    rollouts = [rollout_mask(attention_rollout(a.double(), discard_ratio=0.5, keep_index=0), layouts[0].grid, 1, query=0)
                for a in (timm_attn, hf_attn)]
    torch.testing.assert_close(rollouts[1], rollouts[0], rtol=1e-4, atol=1e-6)
    grads = [family_of(m).attention_gradients(m, x, torch.tensor([0, 2]))[2] for m in (vit, module)]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)
    cams = [gradcam(m, x, [0, 2]) for m in (vit, module)]
    np.testing.assert_allclose(cams[1], cams[0], rtol=1e-3, atol=1e-5)


# --------------------------------------------------------------------------- refusals and the optional extra


def test_hub_offline_names_model_repository_and_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")  # nothing cached
    with pytest.raises(WeightsError) as err:
        load_module(ModelConfig(name="ViT hub", arch="hf:google/vit-base-patch16-224", weights="hub"))
    text = str(err.value)
    assert "'ViT hub'" in text and "google/vit-base-patch16-224" in text and "HF_HUB_OFFLINE" in text
    assert "save_pretrained" in text and 'weights = "file:' in text


@pytest.mark.parametrize("key, value", [("img_size", 64), ("num_classes", 0), ("timm_kwargs", {"depth": 2})])
def test_timm_only_keys_are_refused_on_an_hf_model_at_config_time(tmp_path, key, value):
    from generator.config.loading import ConfigError, parse_config

    write_synthetic_images(tmp_path / "images", count=1)
    model = {"name": "m", "arch": "hf:google/vit-base-patch16-224", "weights": "random:0", key: value}
    with pytest.raises(ConfigError) as err:
        parse_config({"title": "t", "images": str(tmp_path / "images"), "output": str(tmp_path / "o"),
                      "site_dir": str(tmp_path / "s"), "models": [model]})
    assert key in str(err.value) and "hf:" in str(err.value)


def test_remote_code_and_pickles_are_refused(checkpoints, tmp_path):
    import shutil

    remote = shutil.copytree(checkpoints["vit"], tmp_path / "remote")
    cfg = json.loads((remote / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForImageClassification": "modeling_evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="asks for remote code .*refused"):
        _load(remote)

    pickled = shutil.copytree(checkpoints["vit"], tmp_path / "pickled")
    (pickled / "model.safetensors").unlink()
    torch.save({}, pickled / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"no \.safetensors weights \(only pytorch_model\.bin\); only safetensors"):
        _load(pickled)


def test_without_transformers_an_hf_model_fails_alone_in_one_line(tmp_path):
    """transformers made unimportable: the hf: model fails with what to install; the timm model builds."""
    images = tmp_path / "images"
    write_synthetic_images(images, count=1)
    save_tiny("vit", tmp_path / "ckpt")
    tables = {**TINY_DEFAULT_TABLES, "[sections.lime]": "enabled = false", "[sections.stats]": "enabled = false",
              "[sections.maps]": "enabled = false", "[sections.perturb]": "enabled = false",
              "[sections.explorer]": "enabled = false", "[sections.rollout]": "enabled = false"}
    (tmp_path / "g.toml").write_text(
        'title = "t"\nimages = "images"\noutput = "build"\nsite_dir = "site"\n'
        '[[models]]\nname = "Tiny ViT"\narch = "vit_fmnist_patch4_28"\nweights = "random:0"\n'
        '[[models]]\nname = "HF ViT"\narch = "hf:tiny/vit"\nweights = "file:ckpt"\n'
        + "\n".join(f"{h}\n{b}" for h, b in tables.items()))
    code = ("import sys; sys.modules['transformers'] = None\n"
            "from generator.cli import main\nsys.argv[1:] = ['build', '--config', sys.argv[1], '--no-site']\nmain()")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "g.toml")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    report = json.loads((tmp_path / "build" / "run_report.json").read_text())
    failures = report["failures"]
    assert {f["model"] for f in failures} == {"HF ViT"}, failures
    messages = {f["message"] if "message" in f else f.get("error", "") for f in failures}
    assert any("pip install 'vit-gallery[hf]'" in m and "\n" not in m.strip() for m in messages), messages
    assert (tmp_path / "build" / "docs" / "figures" / "heads" / "tiny-vit").is_dir()


@pytest.mark.slow
def test_a_gallery_of_timm_and_every_hf_kind_builds_offline(checkpoints, tmp_path):
    """One timm model and one transformers model of each kind, from save_pretrained folders, every section.

    One method per library keeps it cheap (Grad-CAM for pytorch-grad-cam, Integrated Gradients for captum,
    LIME, the rollouts, LRP where it applies): the others call the model the same way, ``module(x)``.
    """
    images = tmp_path / "images"
    write_synthetic_images(images, count=1)
    models = ['[[models]]\nname = "Tiny ViT"\narch = "vit_fmnist_patch4_28"\nweights = "random:0"\n']
    models += [f'[[models]]\nname = "HF {kind}"\narch = "hf:tiny/{kind}"\nweights = "file:{folder}"\n'
               for kind, folder in checkpoints.items()]
    tables = {**TINY_DEFAULT_TABLES,
              "[sections.faithfulness]": "grid = 4\nstep = 4\nrandom_seeds = [0]\nroad = false\nbootstrap_samples = 100",
              "[sections.swin]": "targets = [[1, 1], [1, 2], [2, 1]]",
              "[sections.lime]": 'num_samples = 40\nsegmentation = "slic"\nsegmentation_params = { n_segments = 8 }',
              "[sections.stats]": "bootstrap_samples = 100", "[methods.lime]": "num_samples = 20",
              **{f"[methods.{name}]": "enabled = false" for name in ("hirescam", "grad-cam-plusplus", "eigencam",
                                                                      "smoothgrad", "occlusion", "kernel-shap")}}
    config = tmp_path / "g.toml"
    config.write_text('title = "t"\nimages = "images"\noutput = "build"\nsite_dir = "site"\n' + "\n".join(models)
                      + "\n".join(f"{h}\n{b}" for h, b in tables.items()))
    run = subprocess.run([sys.executable, "-m", "generator", "build", "--config", str(config), "--quiet"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "build" / "run_report.json").read_text())
    assert not report["failures"]
    figures = tmp_path / "build" / "docs" / "figures"
    for kind in KINDS:
        slug = f"hf-{kind}"
        expected = {"dinov2": {"heads", "rollout", "stats-entropy"},  # headless: attention, no class
                    "swin": {"swin-s1b1", "swin-s1b2", "swin-rollout", "stats-kernels-s1", "lime", "maps",
                             "faithfulness"}}.get(kind, {"heads", "rollout", "rollout-gradient", "stats-entropy",
                                                         "lime", "maps", "faithfulness"})
        drawn = {p.name for p in figures.iterdir() if (p / slug).is_dir()}
        assert expected <= drawn, (kind, drawn)
    assert not {"lime", "maps", "faithfulness", "rollout-gradient"} & {
        p.name for p in figures.iterdir() if (p / "hf-dinov2").is_dir()}
    # the headless model is skipped by what needs a class, each with one line saying so
    headless = {s["section"]: s["reason"] for s in report["not_applicable"] if s["model"] == "HF dinov2"}
    assert {"lime", "maps", "faithfulness"} <= set(headless), headless
    assert all("classifier-head" in headless[name] for name in ("lime", "maps", "faithfulness")), headless
    assert not {"heads", "rollout", "stats", "explorer"} & set(headless), headless
    explorer = {p.name for p in (tmp_path / "build" / "docs" / "explorer").iterdir()}
    assert {f"hf-{kind}" for kind in KINDS} <= explorer
    assert "LRP (it lacks modules that conservative LRP can propagate through)" in (
        tmp_path / "build" / "docs" / "images" / "synthetic-0.md").read_text().replace("&#40;", "(").replace("&#41;", ")")
    assert (tmp_path / "site" / "index.html").is_file()
