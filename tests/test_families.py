"""Model-family adapters: the only code that knows a family; one registry; a toy family plugs in alone."""

from __future__ import annotations

import ast
import io
import json
import tokenize
from pathlib import Path

import pytest
import timm
import torch

import generator
from generator.config.loading import load_config
from generator.families import (UnsupportedModelError, family_named, family_of, register_family, registered_families,
                                unregister_family)
from generator.relevance.registry import register_method, registered_methods, unregister_method

from .conftest import ROOT, write_synthetic_images
from .toys.corner_method import ToyCorner
from .toys.mixer_family import ToyMixerFamily

GENERATOR = ROOT / "generator"
FAMILIES = GENERATOR / "families"


def _timm_model_classes() -> set[str]:
    """Every model class timm defines (an independent oracle: timm's own modules, not our adapters)."""
    import importlib
    import pkgutil
    import warnings

    import timm.models

    names = set()
    for info in pkgutil.iter_modules(timm.models.__path__):
        if info.name.startswith("_"):
            continue
        try:
            with warnings.catch_warnings():  # timm's deprecated shims (timm.models.layers, …) warn on import
                warnings.simplefilter("ignore")
                module = importlib.import_module(f"timm.models.{info.name}")
        except Exception:  # an optional dependency of one model file
            continue
        for name, obj in vars(module).items():
            if (isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == module.__name__
                    and callable(getattr(obj, "forward_head", None))):
                names.add(name)
    return names


def _family_names() -> set[str]:
    return {f.name for f in registered_families()}


def family_knowledge(path: Path, model_classes: set[str], families: set[str]) -> list[str]:
    """file:line of every place in ``path`` that names a timm model class in code, compares a value with a
    family's name, tests ``isinstance`` against a model class, or declares ``families``."""
    source = path.read_text(encoding="utf-8")
    where = path.relative_to(ROOT)
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):  # names in code; not comments or prose
        if tok.type == tokenize.NAME and tok.string in model_classes:
            found.append(f"{where}:{tok.start[0]}: names timm model class {tok.string}")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                values = [side] + (list(side.elts) if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [])
                for v in values:
                    if isinstance(v, ast.Constant) and v.value in families:
                        found.append(f"{where}:{node.lineno}: compares with family name {v.value!r}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
            text = ast.unparse(node.args[1])
            named = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
            named |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
            if named & model_classes:
                found.append(f"{where}:{node.lineno}: isinstance against {text}")
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(getattr(t, "id", None) == "families" for t in targets):
                found.append(f"{where}:{node.lineno}: declares families instead of needs")
    return found


def test_the_grep_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "generator" / "bad.py"
    bad.parent.mkdir()
    bad.write_text('from timm.models.vision_transformer import VisionTransformer\n'
                   'def f(model, family):\n'
                   '    # a comment naming SwinTransformer is prose\n'
                   '    if family == "vit":\n'
                   '        return isinstance(model, VisionTransformer)\n'
                   '    return family in ("swin",)\n'
                   'class S:\n'
                   '    families = ("vit",)\n')
    import tests.test_families as me

    old = me.ROOT
    me.ROOT = tmp_path
    try:
        hits = family_knowledge(bad, _timm_model_classes(), {"vit", "swin"})
    finally:
        me.ROOT = old
    lines = sorted(int(h.split(":")[1]) for h in hits)
    assert lines == [1, 4, 5, 5, 6, 8], hits


def test_nothing_outside_the_families_knows_a_family():
    classes = _timm_model_classes()
    assert {"VisionTransformer", "SwinTransformer", "Eva", "Beit"} <= classes  # the oracle is timm's own list
    found = []
    for path in sorted(GENERATOR.rglob("*.py")):
        if FAMILIES in path.parents:
            continue
        found += family_knowledge(path, classes, _family_names())
    assert not found, "\n".join(found)


def test_family_of_asks_timm_modules_and_names_the_unsupported():
    vit = timm.create_model("vit_fmnist_patch4_28", pretrained=False)
    swin = timm.create_model("swin_fmnist_patch2_28", pretrained=False)
    assert family_of(vit).name == "vit" and family_of(swin).name == "swin"
    with pytest.raises(UnsupportedModelError) as err:
        family_of(torch.nn.Linear(2, 2))
    assert "Linear" in str(err.value) and "vit" in str(err.value) and "swin" in str(err.value)
    with pytest.raises(UnsupportedModelError, match="no model family named 'mixer'"):
        family_named("mixer")


def test_the_adapters_answer_from_the_model():
    vit = timm.create_model("vit_fmnist_patch4_28", pretrained=False).eval()
    layout = family_of(vit).token_layout(vit)
    # timm's own attributes are the oracle
    assert layout.num_prefix_tokens == vit.num_prefix_tokens and layout.grid == tuple(vit.patch_embed.grid_size)
    assert layout.class_token_index == 0 and layout.register_count == 0
    assert family_of(vit).cam_target_layer(vit) is vit.blocks[-1].norm1
    targets = family_of(vit).randomise_targets(vit, 2)
    assert targets[0] is vit.head and targets[1:] == list(vit.blocks)[-2:]
    assert family_of(vit).window_geometry(vit) is None
    tokens = torch.randn(2, layout.num_tokens, vit.embed_dim)
    fmap = family_of(vit).cam_reshape(vit)(tokens)
    assert fmap.shape == (2, vit.embed_dim, *layout.grid)
    assert torch.equal(fmap[1, :, 2, 3], tokens[1, 1 + 2 * layout.grid[1] + 3])

    swin = timm.create_model("swin_fmnist_patch2_28", pretrained=False).eval()
    adapter = family_of(swin)
    with torch.no_grad():
        features = swin.forward_features(torch.randn(1, 3, 28, 28))  # B, h, w, C: the last stage's grid
    assert adapter.token_layout(swin).grid == tuple(features.shape[1:3])
    assert adapter.token_layout(swin).class_token_index is None
    blocks = [b for stage in swin.layers for b in stage.blocks]
    assert adapter.randomise_targets(swin, 3)[1:] == blocks[-3:]
    geometry = adapter.window_geometry(swin)
    assert geometry[(0, 1)] == (tuple(swin.layers[0].blocks[1].window_size), tuple(swin.layers[0].blocks[1].shift_size))


def test_attention_capture_removes_its_hooks_also_on_error():
    vit = timm.create_model("vit_fmnist_patch4_28", pretrained=False).eval()
    adapter = family_of(vit)

    def hooks() -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in vit.modules())

    before = hooks()
    with pytest.raises(RuntimeError, match="boom"):
        with adapter.attention_capture(vit):
            assert hooks() > before
            raise RuntimeError("boom")
    assert hooks() == before
    with torch.no_grad(), adapter.attention_capture(vit) as state:
        vit(torch.randn(1, 3, 28, 28))
    assert state["attn"].shape[0] == len(vit.blocks)
    sums = state["attn"].sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)


# --------------------------------------------------------------------------- a toy family and a toy method, one module each


@pytest.fixture
def toy_family():
    register_family(ToyMixerFamily)
    yield family_named("toy-mixer")
    unregister_family("toy-mixer")


@pytest.fixture
def toy_method():
    ToyCorner.calls.clear()
    register_method(ToyCorner)
    yield ToyCorner
    unregister_method("toy-corner")


def test_a_family_and_a_method_registered_in_the_test_alone_appear_in_a_built_gallery(tmp_path, toy_family,
                                                                                        toy_method):
    write_synthetic_images(tmp_path / "images", count=1, size=28)
    only_grad_cam = "\n".join(f"[methods.{cls.name}]\nenabled = false" for cls in registered_methods()
                               if cls.name not in ("grad-cam", "toy-corner"))
    path = tmp_path / "gallery.toml"
    path.write_text(f"""
title = "Toy family"
images = "{tmp_path / 'images'}"
output = "{tmp_path / 'build'}"
site_dir = "{tmp_path / 'site'}"
[[models]]
name = "Mixer"
arch = "mixer_toy_patch4_28"
weights = "random:0"
labels = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"]
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
    outcome = generator.build(load_config(path), site=False)
    assert outcome.exit_code == 0, [f.error for f in outcome.run.failures]
    assert [m.family for m in outcome.run.models] == ["toy-mixer"]
    # the sections that need attention are skipped, each with the reason, and nothing failed
    reasons = {s.section: s.reason for s in outcome.run.not_applicable}
    assert set(reasons) >= {"heads", "rollout", "swin", "stats", "explorer"}, reasons
    assert "attention-rows" in reasons["rollout"] and "toy-mixer" in reasons["rollout"]
    report = json.loads((tmp_path / "build" / "run_report.json").read_text())
    assert {s["section"] for s in report["not_applicable"]} == set(reasons)
    # the maps section ran a CAM through the toy adapter's target layer and reshape, on its grid
    maps = json.loads((tmp_path / "build" / "docs" / "data" / "maps" / "mixer" / "synthetic-0.json").read_text())
    assert [m["title"] for m in maps["result"]["methods"]] == ["Grad-CAM", "toy corner"]
    page = (tmp_path / "build" / "docs" / "images" / "synthetic-0.md").read_text()
    assert "figures/maps/mixer/synthetic-0.png" in page
    # the toy method ran once, on the toy family's grid, and its map is on the page
    assert len(toy_method.calls) == 1 and "toy corner" in page
