"""The shipped Fashion-MNIST models: they load through the normal file: path, reach their stated
accuracy on the shipped 1,000-image test subset, refuse mismatched checkpoints, and the training
command runs."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from generator.config.loading import ModelConfig, load_config
from generator.models.embedded import FASHION_MNIST_CLASSES, SWIN_NAME, VIT_NAME, WEIGHTS_DIR
from generator.models.loaded import load_model
from generator.models.loading import WeightsError
from generator.devtools.train_demo import evaluate

from .conftest import ROOT

SUBSET = ROOT / "tests" / "data" / "fashion_mnist_test_1k.npz"


@pytest.fixture(scope="module")
def subset():
    data = np.load(SUBSET)
    return data["images"], data["labels"].astype(np.int64)


@pytest.mark.parametrize("name", [VIT_NAME, SWIN_NAME])
def test_shipped_weights_reach_the_stated_accuracy(name, subset):
    card = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    assert card["test_accuracy"] >= 0.88, "the quality bar on the full 10k test set"
    assert card["classes"] == list(FASHION_MNIST_CLASSES)
    assert card["command"].startswith("python -m generator train-demo")
    model = load_model(ModelConfig(name=name, arch=name, weights=f"file:{WEIGHTS_DIR / f'{name}.safetensors'}"))
    assert model.class_names == FASHION_MNIST_CLASSES and not model.random_weights
    accuracy = evaluate(model.module, *subset)
    assert accuracy == pytest.approx(card["test_subset_1k_accuracy"], abs=0.002)


def test_default_gallery_uses_the_shipped_weights():
    cfg = load_config(ROOT / "gallery.toml")
    assert [m.arch for m in cfg.models] == [VIT_NAME, SWIN_NAME]
    assert all(m.weights_kind == "file" and Path(m.weights_arg).is_file() for m in cfg.models)


def test_mismatched_checkpoint_is_refused():
    with pytest.raises(WeightsError, match="does not fit"):
        load_model(ModelConfig(name="x", arch=SWIN_NAME, weights=f"file:{WEIGHTS_DIR / f'{VIT_NAME}.safetensors'}"))


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_training_command_runs_one_short_epoch(tmp_path, subset):
    images, labels = subset
    data = tmp_path / "fmnist"
    data.mkdir()
    for split, (x, y) in {"train": (images[:200], labels[:200]), "t10k": (images[200:300], labels[200:300])}.items():
        _write_idx(data / f"{split}-images-idx3-ubyte.gz", x)
        _write_idx(data / f"{split}-labels-idx1-ubyte.gz", y)
    out = tmp_path / "weights"
    proc = subprocess.run([sys.executable, "-m", "generator", "train-demo", "--model", "vit", "--epochs", "1",
                           "--data-dir", str(data), "--out", str(out), "--threads", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    card = json.loads((out / f"{VIT_NAME}.json").read_text())
    assert card["epochs"] == 1 and len(card["history"]) == 1 and "--epochs 1" in card["command"]
    model = load_model(ModelConfig(name="v", arch=VIT_NAME, weights=f"file:{out / f'{VIT_NAME}.safetensors'}"))
    assert model.module.num_classes == 10


def test_training_command_explains_missing_data(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "generator", "train-demo", "--model", "vit", "--epochs", "1",
                           "--data-dir", str(tmp_path), "--out", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "apt-get install dataset-fashion-mnist" in proc.stderr
