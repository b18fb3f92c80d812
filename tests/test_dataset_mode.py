"""Dataset mode: a class-folder set where every image gets data and enters the aggregates, and a
seeded sample (always with the misclassified images) gets pages and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generator.builder import build
from generator.config.loading import ConfigError, load_config
from generator.data.images import ImageItem, scan_dataset
from generator.pipeline.runner import choose_sample, label_matches

from .conftest import ROOT

# Folder names: a slug of the class name, the class name's own case, and a class index (7 = Sneaker).
FOLDERS = {0: "t-shirt-top", 6: "Shirt", 7: "7"}


def write_dataset(root: Path, per_class: int = 3) -> dict[str, str]:
    """Fashion-MNIST test images in class folders; returns relative path → folder name."""
    data = np.load(ROOT / "tests" / "data" / "fashion_mnist_test_1k.npz")
    written = {}
    for label, folder in FOLDERS.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for k, index in enumerate(np.flatnonzero(data["labels"] == label)[:per_class]):
            name = f"{folder}/img {k}.png"
            Image.fromarray(data["images"][index]).save(root / name)
            written[name] = folder
    (root / "stray.png").write_bytes(b"")  # files beside the class folders are not read
    return written


def dataset_config(tmp_path: Path, sample: int, extra: str = "") -> Path:
    root = tmp_path / "set"
    write_dataset(root)
    config = tmp_path / "gallery.toml"
    config.write_text(f"""
title = "Dataset"
images = "{root}"
output = "{tmp_path / 'build'}"
site_dir = "{tmp_path / 'site'}"

[dataset]
enabled = true
sample = {sample}
seed = 3

[[models]]
name = "ViT-FMNIST"
arch = "vit_fmnist_patch4_28"
weights = "file:{ROOT / 'generator' / 'models' / 'weights' / 'vit_fmnist_patch4_28.safetensors'}"

[sections.rollout]
enabled = false
[sections.lime]
enabled = false
[sections.maps]
enabled = false
[sections.probe]
enabled = false
[sections.faithfulness]
enabled = false
{extra}
""", encoding="utf-8")
    return config


def test_scan_dataset_keeps_labels_and_unique_slugs(tmp_path):
    written = write_dataset(tmp_path)
    items, failures = scan_dataset(tmp_path)
    assert [i.name for i in items] == sorted(written, key=lambda n: n.encode())  # class, then file
    assert {i.name: i.known_label for i in items} == written
    assert len({i.slug for i in items}) == len(items) and "t-shirt-top-img-0" in {i.slug for i in items}
    assert failures == []  # stray.png lies beside the class folders: not part of the set
    empty = tmp_path / "flat"
    empty.mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        scan_dataset(empty)


def test_labels_match_by_name_or_index():
    assert label_matches("t-shirt-top", {"index": 0, "label": "T-shirt/top"})
    assert label_matches("Shirt", {"index": 6, "label": "Shirt"})
    assert not label_matches("Shirt", {"index": 0, "label": "T-shirt/top"})
    assert label_matches("7", {"index": 7, "label": "Sneaker"}) and not label_matches("7", {"index": 5, "label": "x"})


def test_sample_is_seeded_and_keeps_every_misclassified_image():
    items = [ImageItem(slug=f"i{k}", path=Path(f"c/i{k}.png"), sha256="", shape=(1, 1), known_label="c")
             for k in range(20)]
    for k in (3, 17):
        items[k].verdicts = {"m": {"predicted": "x", "correct": False}}
    chosen = choose_sample(items, 5, seed=0)
    assert len(chosen) == 5 and {"i3", "i17"} <= set(chosen)
    assert chosen == choose_sample(list(items), 5, seed=0)  # deterministic
    assert chosen == [i.slug for i in items if i.slug in chosen]  # in dataset order
    assert choose_sample(items, 5, seed=1) != chosen
    assert choose_sample(items, 1, seed=0) == ["i3", "i17"]  # misclassified ones even beyond the size
    assert len(choose_sample(items, 100, seed=0)) == 20


def test_config_refuses_a_negative_sample(tmp_path):
    config = dataset_config(tmp_path, sample=-1)
    with pytest.raises(ConfigError, match=r"dataset\.sample"):
        load_config(config)


def test_dataset_build_pages_only_the_sample_and_aggregates_over_all(tmp_path, monkeypatch):
    from generator.sections.heads import HeadsSection

    seen = []
    original = HeadsSection.chapter_extras
    monkeypatch.setattr(HeadsSection, "chapter_extras",
                        lambda self, results: (seen.append({r.image for r in results}), original(self, results))[1])
    config = dataset_config(tmp_path, sample=2)
    cfg = load_config(config)
    outcome = build(cfg, site=False)
    run = outcome.run
    assert run.ok, run.failures
    data = run.dataset
    assert data["images"] == 9 and data["classes"] == ["7", "Shirt", "t-shirt-top"]
    every = {item["slug"] for item in data["items"]}
    # every image: a data file and a result; the chapters' aggregates see them all
    docs = cfg.output / "docs"
    assert {p.stem for p in (docs / "data" / "heads" / "vit-fmnist").glob("*.json")} == every
    assert {r.image for r in run.results} == every
    assert seen == [every]
    # accuracy against the folders, from the predictions the records state
    verdicts = {item["slug"]: item["verdicts"]["ViT-FMNIST"] for item in data["items"]}
    correct = sum(v["correct"] for v in verdicts.values())
    assert data["accuracy"]["ViT-FMNIST"] == {"correct": correct, "total": 9, "accuracy": round(correct / 9, 6)}
    for item in data["items"]:
        meta = json.loads((docs / "data" / "heads" / "vit-fmnist" / f"{item['slug']}.json").read_text())["result"]
        assert item["verdicts"]["ViT-FMNIST"]["predicted"] == meta["top"][0]["label"]
    # the sample: every misclassified image, then seeded ones up to 2; only they get pages and figures
    wrong = {s for s, v in verdicts.items() if not v["correct"]}
    sampled = set(data["sampled"])
    assert wrong <= sampled and len(sampled) == max(2, len(wrong))
    assert {i.slug for i in run.images} == sampled
    assert {p.stem for p in (docs / "images").glob("*.md")} == sampled
    assert {p.stem for p in (docs / "figures").rglob("*.png")} == sampled
    assert all(bool(r.figures or r.outputs) == (r.image in sampled) for r in run.results)  # figures, explorers
    page = (docs / "images" / f"{sorted(sampled)[0]}.md").read_text()
    assert "Known label" in page and (", correct" in page or ", wrong" in page)
    index = (docs / "index.md").read_text()
    assert "## Dataset" in index and "ViT&#45;FMNIST" in index
    report = json.loads((cfg.output / "run_report.json").read_text())
    assert report["dataset"]["accuracy"] == data["accuracy"]
    # a second build reuses every result and chooses the same sample
    again = build(cfg, site=False).run
    assert again.dataset["sampled"] == data["sampled"] and all(r.cached for r in again.results)
    # `vit-gallery verify`: every image's data file is in the pool, sampled ones included or not
    from generator.verify import verify

    checked = verify(cfg.output, sample=1, seed=1)
    assert checked.ok and checked.exact, (checked.file_problems, [c for s in checked.sections for c in s.checks])
    assert "heads" in {s.section for s in checked.sections} and checked.files_checked > len(every)
