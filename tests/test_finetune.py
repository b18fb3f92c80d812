"""Linear probe: a separable synthetic task, cached path == plain path, layouts, bad trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_model_data_config

from .conftest import COLOURS, colour_tree  # noqa: F401  (used by other tests too)
from generator.analysis.probe import (DatasetError, ProbeSettings, discover_dataset, extract_features, new_head,
                                      train_probe_on_features, train_probe_plain)

@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return timm.create_model("vit_fmnist_patch4_28", pretrained=False).eval()


def features_of(model, splits, tmp_path):
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    out = []
    for name, items in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        feats = extract_features(model, items, transform, tmp_path / f"{name}.npy", batch_size=16)
        out.append((np.asarray(feats), np.array([y for _, y in items])))
    return out, transform


def test_probe_learns_colour_classes(model, tmp_path):
    splits = discover_dataset(colour_tree(tmp_path / "data", per_class=30))
    (train, val, test), _ = features_of(model, splits, tmp_path)
    head = new_head(model, 3, seed=0).get_classifier()
    result = train_probe_on_features(head, train, val, test, ProbeSettings(epochs=30, lr=1e-2))
    assert result.test_accuracy >= 0.95
    assert result.confusion.sum() == len(splits.test)
    assert len(result.history) == 30


def test_cached_features_give_the_same_head_as_the_plain_loop(model, tmp_path):
    splits = discover_dataset(colour_tree(tmp_path / "data", per_class=12))
    settings = ProbeSettings(epochs=3, batch_size=8, seed=5)
    (train, val, test), transform = features_of(model, splits, tmp_path)
    cached = train_probe_on_features(new_head(model, 3, settings.seed).get_classifier(), train, val, test, settings)
    plain = train_probe_plain(new_head(model, 3, settings.seed), splits, transform, settings)
    assert cached.head_state.keys() == plain.head_state.keys() and plain.head_state
    for key in plain.head_state:
        torch.testing.assert_close(cached.head_state[key], plain.head_state[key], atol=1e-5, rtol=0)
    assert cached.test_accuracy == plain.test_accuracy
    assert [h["val_accuracy"] for h in cached.history] == [h["val_accuracy"] for h in plain.history]
    # the backbone was not touched
    assert all(p.grad is None for p in model.parameters())


def test_layouts(tmp_path):
    birds = tmp_path / "birds"
    for split in ("train", "valid", "test"):
        colour_tree(birds / split, per_class=2)
    s = discover_dataset(birds)
    assert s.layout.startswith("train/ valid/ test/") and len(s.train) == len(s.val) == len(s.test) == 6

    brain = tmp_path / "brain"
    colour_tree(brain / "Training", per_class=10)
    colour_tree(brain / "Testing", per_class=3)
    s = discover_dataset(brain)
    assert "Training/ Testing/" in s.layout and len(s.test) == 9 and len(s.train) + len(s.val) == 30
    assert len(s.val) == 3

    eurosat = tmp_path / "EuroSAT" / "2750"
    colour_tree(eurosat, per_class=10)
    s = discover_dataset(tmp_path / "EuroSAT")
    assert "80/10/10" in s.layout and (len(s.train), len(s.val), len(s.test)) == (24, 3, 3)
    assert s.classes == ["blue", "green", "red"]
    again = discover_dataset(tmp_path / "EuroSAT")
    assert again.train == s.train  # seeded split


def test_bad_trees(tmp_path, model):
    one = colour_tree(tmp_path / "one", classes={"red": COLOURS["red"]})
    with pytest.raises(DatasetError, match="at least 2"):
        discover_dataset(one)
    empty = colour_tree(tmp_path / "empty", per_class=3)
    (empty / "yellow").mkdir()
    with pytest.raises(DatasetError, match="empty class folder.*yellow"):
        discover_dataset(empty)
    with pytest.raises(DatasetError, match="not found"):
        discover_dataset(tmp_path / "nowhere")
    broken = colour_tree(tmp_path / "broken", per_class=10)
    (broken / "red" / "bad.png").write_bytes(b"not a png")
    splits = discover_dataset(broken)
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    items = splits.train + splits.val + splits.test
    with pytest.raises(DatasetError, match="unreadable image .*bad.png"):
        extract_features(model, items, transform, tmp_path / "f.npy")
