"""The house: relevance methods plug in through one registry, sections own their settings, the build
is a library call, the import graph has no circle, and the package installs and runs from anywhere."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import generator
from generator.config import ConfigError, load_config
from generator.relevance import RelevanceMap, RelevanceMethod, register_method, registered_methods, unregister_method
from generator.sections import SECTIONS

from .conftest import ROOT, write_synthetic_images

ONLY_MAPS = """
[sections.heads]
enabled = false
[sections.rollout]
enabled = false
[sections.swin]
enabled = false
[sections.lime]
enabled = false
[sections.perturb]
enabled = false
[sections.probe]
enabled = false
[sections.faithfulness]
grid = 7
step = 7
random_seeds = [0]
[methods.lime]
enabled = false
"""


def gallery(tmp_path: Path, sections: str = ONLY_MAPS) -> Path:
    write_synthetic_images(tmp_path / "images", count=1, size=28)
    config = tmp_path / "gallery.toml"
    config.write_text(f"""
title = "House"
images = "{tmp_path / 'images'}"
output = "{tmp_path / 'build'}"
site_dir = "{tmp_path / 'site'}"
[[models]]
name = "ViT"
arch = "vit_fmnist_patch4_28"
weights = "random:0"
{sections}
""", encoding="utf-8")
    return config


@pytest.fixture
def toy_method():
    """A relevance method that exists only in this test: the top-left cell is the most relevant."""

    from pydantic import Field

    from generator.relevance import MethodSettings

    class ToySettings(MethodSettings):
        strength: float = Field(default=2.0, gt=0)

    @register_method
    class ToyCorner(RelevanceMethod):
        name = "toy-corner"
        label = "toy corner"
        Settings = ToySettings
        description = "a test method that points at the top-left corner"
        calls: list = []

        def map(self, model, inputs, target):
            type(self).calls.append(target)
            values = np.zeros((7, 7))
            values[0, 0] = self.settings.strength
            return RelevanceMap(values, {"toy": True})

    yield ToyCorner
    unregister_method("toy-corner")


def test_a_method_registered_in_the_test_alone_is_scored_and_shown(tmp_path, toy_method):
    config = load_config(gallery(tmp_path))
    assert config.methods.toy_corner.enabled and config.methods.toy_corner.strength == 2.0
    outcome = generator.build(config, site=False)
    assert outcome.exit_code == 0, [f.error for f in outcome.run.failures]
    docs = tmp_path / "build" / "docs"
    faith = json.loads((docs / "data" / "faithfulness" / "vit" / "synthetic-0.json").read_text())
    rows = {r["method"]: r for r in faith["result"]["rows"]}
    assert "toy corner" in rows and 0.0 <= rows["toy corner"]["deletion_auc"] <= 1.0
    maps = json.loads((docs / "data" / "maps" / "vit" / "synthetic-0.json").read_text())
    assert "toy corner" in [m["title"] for m in maps["result"]["methods"]]
    page = (docs / "images" / "synthetic-0.md").read_text()
    assert "toy corner" in page and "figures/maps/vit/synthetic-0.png" in page
    # the map was computed once for the trained model and once for the randomised copy, then shared
    assert len(toy_method.calls) == 2
    again = generator.build(config, site=False)
    assert again.exit_code == 0 and len(toy_method.calls) == 2


def test_method_settings_are_validated_from_the_registry(tmp_path, toy_method):
    path = gallery(tmp_path, ONLY_MAPS + "[methods.toy-corner]\nstrength = -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == "methods.toy-corner.strength" and "> 0" in str(err.value)
    path = gallery(tmp_path, ONLY_MAPS + "[methods.toy-cornr]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == "methods.toy-cornr" and "did you mean 'toy-corner'" in str(err.value)


def test_sections_declare_their_own_settings():
    from generator import config as config_module

    source = Path(config_module.__file__).read_text()
    for cls in SECTIONS:
        assert cls.Settings.__module__ == cls.__module__, f"{cls.name}'s settings live apart from the section"
        assert cls.Settings.__name__ not in source, f"config.py still names {cls.Settings.__name__}"
        assert cls.name in config_module.sections_model().model_fields
    names = [cls.name for cls in registered_methods()]
    assert len(names) == len(set(names)) and {"rollout", "lime", "swin-rollout"} <= set(names)


def test_build_is_a_library_call_and_the_cli_only_wraps_it(tmp_path):
    config = load_config(gallery(tmp_path))
    outcome = generator.build(config, site=False)
    assert isinstance(outcome, generator.BuildResult)
    assert outcome.exit_code == 0 and outcome.site_dir is None
    assert {p.name for p in outcome.pages} >= {"index.md", "faithfulness.md", "synthetic-0.md"}
    cli = Path(generator.__file__).with_name("cli.py").read_text()
    assert "builder import build" in cli and "def run(" not in cli


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path, package: str) -> set[str]:
    """Every generator module that ``path`` imports, at any depth of the file (functions included)."""
    module = package + "." + ".".join(path.relative_to(ROOT / "generator").with_suffix("").parts)
    module = module.removesuffix(".__init__")
    base = module.rsplit(".", 1)[0] if not path.name == "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith(package):
                submodules = {f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")}
                # ``from . import x`` of a submodule imports x (its package is the importer's own, already
                # running); of anything else (``__version__``) it runs the package's __init__
                if node.module or len(submodules) < len(node.names):
                    found.add(target)
                found.update(submodules)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(package))
    return found


def test_import_graph_has_no_circle():
    files = {}
    for path in (ROOT / "generator").rglob("*.py"):
        name = "generator." + ".".join(path.relative_to(ROOT / "generator").with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path
    # __init__ edges count: a package's __init__ that imports its modules runs whenever one of them is
    # imported, so ``from . import x`` in a module whose package __init__ imports it back is a circle too
    graph = {name: {t for t in _imports(path, "generator") if t in files and t != name} for name, path in files.items()}
    cycles = []

    def visit(node, stack, seen):
        for nxt in graph[node]:
            if nxt in stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, stack + [nxt], seen)

    for start in graph:
        visit(start, [start], {start})
    direct = [c for c in cycles if len(c) <= 3]
    assert not cycles, sorted({" → ".join(c) for c in (direct or cycles)})[:10]


def test_non_editable_install_builds_a_gallery_from_another_folder(tmp_path):
    target = tmp_path / "site-packages"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (target / "generator" / "templates" / "image.md.j2").is_file()
    assert (target / "generator" / "templates" / "mkdocs-theme.yml").is_file()
    assert not (target / "generator" / "pipeline.py").exists()
    work = tmp_path / "elsewhere"
    work.mkdir()
    write_synthetic_images(work / "pics", count=1, size=28)
    (work / "tiny.toml").write_text("""
title = "Installed"
images = "pics"
output = "out"
site_dir = "html"
[[models]]
name = "ViT"
arch = "vit_fmnist_patch4_28"
weights = "random:0"
[sections.rollout]
enabled = false
[sections.swin]
enabled = false
[sections.lime]
enabled = false
[sections.perturb]
enabled = false
[sections.probe]
enabled = false
[sections.faithfulness]
enabled = false
[sections.maps]
enabled = false
""")
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", "import generator, sys; print(generator.__file__); "
                           "from generator.cli import main; sys.argv = ['vit-gallery'] + sys.argv[1:]; main()",
                           "build", "--config", "tiny.toml", "--quiet"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0].startswith(str(target))
    assert (work / "html" / "index.html").is_file()
    assert (work / "out" / "docs" / "figures" / "heads" / "vit" / "synthetic-0.png").is_file()


def test_a_config_travels_to_worker_processes(tmp_path):
    """Render workers (--jobs N) and cluster workers receive the config pickled."""
    import pickle

    config = load_config(gallery(tmp_path))
    proc = subprocess.run([sys.executable, "-c", "import pickle, sys; c = pickle.loads(sys.stdin.buffer.read()); "
                           "print(c.sections.faithfulness.grid, c.methods.lime.enabled, c.models[0].name)"],
                          input=pickle.dumps(config), capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().split() == ["7", "False", "ViT"]
