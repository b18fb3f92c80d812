"""The house: relevance methods plug in through one registry, sections own their settings, the build
is a library call, the import graph has no circle, and the package installs and runs from anywhere."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import generator
from generator.config.loading import ConfigError, load_config
from generator.relevance.registry import register_method, registered_methods, unregister_method
from generator.sections import SECTIONS

from .conftest import ROOT, write_synthetic_images
from .toys.corner_method import ToyCorner

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
    """A relevance method that exists only in the tests (one module), registered with one line."""
    ToyCorner.calls.clear()
    register_method(ToyCorner)
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
    # scored like every map: its AUCs are the trapezoid areas under the curves its figure draws
    curves = json.loads((docs / "figures" / "faithfulness" / "vit" / "synthetic-0.data.json").read_text())
    for kind in ("deletion", "insertion"):
        area = np.trapezoid(np.asarray(curves[kind]["toy corner"], dtype=np.float64), curves["share_changed"])
        assert abs(rows["toy corner"][f"{kind}_auc"] - area) < 1e-6, kind
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
    from generator.config import loading as config_module

    source = Path(config_module.__file__).read_text()
    for cls in SECTIONS:
        assert cls.Settings.__module__ == cls.__module__, f"{cls.name}'s settings live apart from the section"
        assert cls.Settings.__name__ not in source, f"config.py still names {cls.Settings.__name__}"
        assert cls.name in config_module.sections_model().model_fields
    # the schema comes from the registered tables, not from importing what registered them
    modules = _module_files()
    below = _imports(Path(config_module.__file__), modules)
    assert not {m for m in below if m.startswith(("generator.sections", "generator.relevance.registry", "generator.relevance"))}, below
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


def _module_files() -> dict[str, Path]:
    """Every module of the generator package by dotted name (a package by its own name)."""
    files = {}
    for path in (ROOT / "generator").rglob("*.py"):
        name = "generator." + ".".join(path.relative_to(ROOT / "generator").with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path
    return files


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every generator module that ``path`` imports, at any depth of the file (functions included).

    ``from P import a`` depends on ``P.a`` where that is a module, else on ``P`` itself (``a`` is then
    a name that ``P/__init__.py`` defines or re-exports, which runs all of that ``__init__``).
    """
    module = next(name for name, p in modules.items() if p == path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {t for t in found if t in modules and t != module}


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Every circle of explicit import statements, ``__init__`` modules' edges included."""
    graph = {name: _imports(path, modules) for name, path in modules.items()}
    cycles = []

    def visit(node, stack, seen):
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, stack + [nxt], seen)

    for start in sorted(graph):
        visit(start, [start], {start})
    return cycles


def test_import_graph_has_no_circle():
    cycles = import_cycles(_module_files())
    assert not cycles, sorted({" → ".join(c) for c in cycles}, key=len)[:10]


def test_the_cycle_finder_sees_a_circle_through_a_package_init(tmp_path, monkeypatch):
    """The shape that hid a circle before: a module importing a name from its package's ``__init__``,
    which imports that module's importer."""
    pkg = tmp_path / "generator"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .builder import build\n")
    (pkg / "builder.py").write_text("from .sub.leaf import f\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "leaf.py").write_text("from .. import build\nfrom . import other\n")
    (pkg / "sub" / "other.py").write_text("x = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    cycles = import_cycles(_module_files())
    assert ["generator", "generator.builder", "generator.sub.leaf", "generator"] in cycles
    # ``from . import other`` names a module: an edge to it, not to the package's __init__
    assert not any("generator.sub.other" in c for c in cycles)


#: What a checkout's top level holds that a wheel is not built from (outputs, environments, caches).
_NOT_SOURCE = {".git", ".venv", "build", "site", "dist", ".pytest_cache", "figures-export", "site-report",
               "site-report-cpu", "tests"}


def _not_source(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == ROOT
    return {n for n in names if (top and n in _NOT_SOURCE) or n == "__pycache__" or n.endswith(".egg-info")}


def test_wheel_installs_into_a_new_venv_and_builds_a_gallery_from_another_folder(tmp_path):
    """A wheel built from the checkout, installed into a venv that cannot see the checkout (no editable
    finder, no PYTHONPATH): ``vit-gallery build`` runs from another folder on the wheel's own templates,
    theme, site assets and embedded weights."""
    import sysconfig

    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ where the gallery writes
    shutil.copytree(ROOT, source, ignore=_not_source)
    dist = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(dist), str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheel = next(dist.glob("vit_gallery-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the dependencies come from this venv's site-packages as a plain path: a .pth line is not a site
    # directory, so the editable install's finder there is never installed in the new venv
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, env=env).stdout.strip()
    (Path(purelib) / "_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    write_synthetic_images(work / "pics", count=1, size=28)
    others = "".join(f"[sections.{name}]\nenabled = false\n" for name in
                     ("rollout", "swin", "lime", "perturb", "probe", "faithfulness", "maps", "stats"))
    (work / "tiny.toml").write_text(f"""
title = "Installed"
images = "pics"
output = "out"
site_dir = "html"
[[models]]
name = "ViT"
arch = "vit_fmnist_patch4_28"
weights = "hub"
{others}""")
    env["HF_HUB_OFFLINE"] = "1"
    where = subprocess.run([str(python), "-c", "import generator, sys; print(generator.__file__); "
                            "print(any('editable' in type(f).__name__.lower() or 'editable' in repr(f) "
                            "for f in sys.meta_path))"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr[-3000:]
    module_file, editable = where.stdout.split()
    assert Path(module_file).is_relative_to(venv) and editable == "False", where.stdout
    proc = subprocess.run([str(venv / "bin" / "vit-gallery"), "build", "--config", "tiny.toml", "--quiet"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (work / "html" / "index.html").is_file()
    assert (work / "html" / "assets" / "vit-gallery" / "gallery.css").is_file()
    assert (work / "out" / "docs" / "figures" / "heads" / "vit" / "synthetic-0.png").is_file()
    # the embedded weights were read offline from the installed package ("hub" names the shipped file)
    installed = Path(module_file).parent / "models" / "weights" / "vit_fmnist_patch4_28.safetensors"
    assert installed.read_bytes() == (ROOT / "generator" / "models" / "weights" / installed.name).read_bytes()
    report = json.loads((work / "out" / "run_report.json").read_text())
    assert report["failures"] == [] and not report["models"][0].get("random_weights", False)


def test_a_config_travels_to_worker_processes(tmp_path):
    """Render workers (--jobs N) and cluster workers receive the config pickled."""
    import pickle

    config = load_config(gallery(tmp_path))
    proc = subprocess.run([sys.executable, "-c", "import pickle, sys; c = pickle.loads(sys.stdin.buffer.read()); "
                           "print(c.sections.faithfulness.grid, c.methods.lime.enabled, c.models[0].name)"],
                          input=pickle.dumps(config), capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().split() == ["7", "False", "ViT"]
