"""Incremental builds: the model-identity memo, and a fully cached rebuild that loads no model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from generator.config.loading import ModelConfig, load_config
from generator.models.loaded import identity_key, open_model

from .expected import expected_jobs, of_section, summary

WARM = """
import runpy, sys
sys.argv = ["vit-gallery", "build", "--config", sys.argv[1], "--quiet", "--no-site"]
try:
    runpy.run_module("generator", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(f"EXIT {code} TORCH {'torch' in sys.modules} TIMM {'timm' in sys.modules} LIME {'lime' in sys.modules}")
"""


def data_files(docs: Path) -> dict[str, bytes]:
    return {str(p.relative_to(docs)): p.read_bytes() for p in sorted((docs / "data").rglob("*.json"))}


def test_cached_rebuild_loads_no_model_and_changes_nothing(gallery_copy):
    docs = load_config(gallery_copy).output / "docs"
    before = data_files(docs)
    proc = subprocess.run([sys.executable, "-c", WARM, str(gallery_copy)], capture_output=True, text=True, timeout=300)
    assert "EXIT 0 TORCH False TIMM False LIME False" in proc.stdout, proc.stdout + proc.stderr
    jobs = expected_jobs(gallery_copy)
    assert summary(jobs, cached=len(jobs)) in proc.stdout
    assert data_files(docs) == before

    # a changed section parameter: the memo-served model loads its weights lazily and recomputes what
    # reads it, the LIME section alone (the maps' LIME map has its own [methods.lime] num_samples here)
    text = gallery_copy.read_text().replace("num_samples = 60", "num_samples = 61")
    gallery_copy.write_text(text)
    proc = subprocess.run([sys.executable, "-c", WARM, str(gallery_copy)], capture_output=True, text=True, timeout=300)
    assert "EXIT 0 TORCH True" in proc.stdout, proc.stdout + proc.stderr
    assert "it/s" not in proc.stderr, proc.stderr  # --quiet: LIME's own progress bar too
    redone = of_section(jobs, "lime")
    assert redone and summary(jobs, cached=len(jobs) - len(redone)) in proc.stdout
    changed = {k for k, v in data_files(docs).items() if before.get(k) != v}
    assert len(changed) == len(redone) and all(k.startswith("data/lime/") for k in changed), changed


def _weights_file(tmp_path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = timm.create_model("vit_fmnist_patch4_28", pretrained=False)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_identity_memo_follows_the_weights_file(tmp_path):
    path = _weights_file(tmp_path, 0)
    config = ModelConfig(name="v", arch="vit_fmnist_patch4_28", weights=f"file:{path}")
    memo = tmp_path / "memo"
    first = open_model(config, "cpu", memo)
    assert first._module is not None and len(list(memo.glob("*.json"))) == 1

    served = open_model(config, "cpu", memo)
    assert served._module is None  # nothing loaded yet
    for name in ("family", "data_config", "class_names", "weights_sha256", "source", "random_weights", "structure"):
        assert getattr(served, name) == getattr(first, name), name
    assert served.input_size == first.input_size
    loaded = served.module  # on first use
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in first.module.parameters())

    # same bytes, new mtime: the key changes, the model loads again, the hash stays
    key = identity_key(config)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert identity_key(config) != key
    again = open_model(config, "cpu", memo)
    assert again._module is not None and again.weights_sha256 == first.weights_sha256

    # other weights under the same path: a new hash
    _weights_file(tmp_path, 1)
    other = open_model(config, "cpu", memo)
    assert other._module is not None and other.weights_sha256 != first.weights_sha256

    # a corrupt memo is discarded and written again
    entry = memo / f"{identity_key(config)}.json"
    entry.write_text("{ not json")
    fixed = open_model(config, "cpu", memo)
    assert fixed._module is not None
    assert json.loads(entry.read_text())["identity"]["weights_sha256"] == other.weights_sha256

    # read_memo=False (--no-cache) always loads
    assert open_model(config, "cpu", memo, read_memo=False)._module is not None


def test_hub_weights_are_never_memoised():
    assert identity_key(ModelConfig(name="h", arch="vit_base_patch16_224", weights="hub")) is None
    assert identity_key(ModelConfig(name="r", arch="vit_fmnist_patch4_28", weights="random:3")) is not None
