"""Probe datasets: ImageFolder-style trees (three layouts), built-ins from installed packages,
and content hashes. numpy and Pillow only, so that planning a build never imports torch.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from .images import IMAGE_SUFFIXES
from ..pipeline.outcomes import JobSkipped

__all__ = [
    "DATASET_SOURCES",
    "DatasetError",
    "DatasetMissing",
    "DatasetSplits",
    "discover_dataset",
    "files_sha256",
    "materialise_builtin",
]

TRAIN_NAMES = ("train", "training")
VAL_NAMES = ("val", "valid", "validation")
TEST_NAMES = ("test", "testing")

#: Where to get the study's datasets, for "missing dataset" messages.
DATASET_SOURCES = {
    "eurosat": "EuroSAT RGB: https://github.com/phelber/EuroSAT (the 2750/ folder of class folders)",
    "brain": "Brain Tumor MRI: https://www.kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset (Training/, Testing/)",
    "bird": "525 Bird Species: https://www.kaggle.com/datasets/gpiosenka/100-bird-species (train/, valid/, test/)",
}


class DatasetError(ValueError):
    """A dataset tree that cannot be used; the message says what is wrong and where."""


class DatasetMissing(DatasetError, JobSkipped):
    """A dataset that is not there at all (not downloaded): its jobs are skipped, not failed."""


@dataclass
class DatasetSplits:
    """Files and labels of one dataset, split three ways.

    Attributes:
        classes: class names (sorted folder names).
        train, val, test: lists of (path, class index).
        layout: how the tree was read (for the page).
    """

    classes: list[str]
    train: list[tuple[Path, int]]
    val: list[tuple[Path, int]]
    test: list[tuple[Path, int]]
    layout: str



# --------------------------------------------------------------------------- datasets


def _class_files(folder: Path) -> dict[str, list[Path]]:
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        classes[sub.name] = files
    return classes


def _find(root: Path, names: Iterable[str]) -> Path | None:
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.is_dir() and child.name.lower() in names:
            return child
    return None


def _labelled(classes: list[str], files: dict[str, list[Path]], where: Path) -> list[tuple[Path, int]]:
    out = []
    for name, paths in files.items():
        if name not in classes:
            raise DatasetError(f"{where}: class folder {name!r} does not appear in the training split")
        out += [(p, classes.index(name)) for p in paths]
    return out


def _check_classes(files: dict[str, list[Path]], where: Path) -> list[str]:
    if len(files) < 2:
        raise DatasetError(f"{where}: found {len(files)} class folder(s); a classifier needs at least 2")
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        raise DatasetError(f"{where}: empty class folder(s): {', '.join(empty)}")
    return list(files)


def _split(items: list[tuple[Path, int]], ratios: tuple[float, ...], seed: int) -> list[list[tuple[Path, int]]]:
    """Seeded stratified split by ``ratios`` (summing to 1)."""
    rng = random.Random(seed)
    parts: list[list[tuple[Path, int]]] = [[] for _ in ratios]
    for label in sorted({y for _, y in items}):
        group = [it for it in items if it[1] == label]
        rng.shuffle(group)
        bounds = np.cumsum([0] + [round(r * len(group)) for r in ratios[:-1]] + [len(group)])
        bounds = np.minimum(bounds, len(group))
        for i in range(len(ratios)):
            parts[i] += group[bounds[i] : bounds[i + 1]]
    return [sorted(p, key=lambda it: str(it[0])) for p in parts]


def discover_dataset(root: Path, split_seed: int = 0, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> DatasetSplits:
    """Read an ImageFolder-style tree.

    Recognised layouts: ``train/ val|valid/ test/`` (525 Bird Species), ``Training/ Testing/``
    (Brain Tumor MRI; validation split off training, 10 %), and class folders directly under
    ``root`` or under a single wrapper folder (EuroSAT's ``2750/``), split ``ratios`` (80/10/10).

    Raises:
        DatasetError: missing root, fewer than two classes, empty classes, mismatched splits.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    train_dir, val_dir, test_dir = _find(root, TRAIN_NAMES), _find(root, VAL_NAMES), _find(root, TEST_NAMES)
    if train_dir and test_dir:
        train_files = _class_files(train_dir)
        classes = _check_classes(train_files, train_dir)
        train = _labelled(classes, train_files, train_dir)
        test_files = _class_files(test_dir)
        _check_classes(test_files, test_dir)
        test = _labelled(classes, test_files, test_dir)
        if val_dir:
            val_files = _class_files(val_dir)
            _check_classes(val_files, val_dir)
            return DatasetSplits(classes, train, _labelled(classes, val_files, val_dir), test,
                                 f"{train_dir.name}/ {val_dir.name}/ {test_dir.name}/")
        train, val = _split(train, (0.9, 0.1), split_seed)
        return DatasetSplits(classes, train, val, test,
                             f"{train_dir.name}/ {test_dir.name}/ (validation: 10% of {train_dir.name}, seed {split_seed})")
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and all(p.is_dir() for p in subdirs[0].iterdir()):  # a wrapper, e.g. EuroSAT's 2750/
        return discover_dataset(subdirs[0], split_seed, ratios)
    files = _class_files(root)
    classes = _check_classes(files, root)
    items = _labelled(classes, files, root)
    train, val, test = _split(items, ratios, split_seed)
    if not val or not test:
        raise DatasetError(f"{root}: too few images ({len(items)}) for a {ratios} split")
    pct = "/".join(str(round(100 * r)) for r in ratios)
    return DatasetSplits(classes, train, val, test, f"class folders, split {pct} (seed {split_seed})")


def materialise_builtin(name: str, target: Path) -> Path:
    """Write a dataset that ships inside an installed package as an ImageFolder tree (once).

    ``sklearn:digits``: scikit-learn's 1,797 8×8 handwritten digits, 10 classes.
    ``skimage:lfw_subset``: scikit-image's 200 25×25 crops, 100 faces and 100 non-faces.
    """
    done = target / ".complete"
    if done.is_file():
        return target
    if name == "sklearn:digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        arrays = (digits.images / 16.0 * 255).round().astype(np.uint8)
        labels = [str(int(t)) for t in digits.target]
    elif name == "skimage:lfw_subset":
        from skimage.data import lfw_subset

        faces = lfw_subset()
        arrays = (faces * 255).round().astype(np.uint8)
        labels = ["face"] * 100 + ["non-face"] * 100
    else:
        raise DatasetError(f"unknown built-in dataset {name!r}; use sklearn:digits or skimage:lfw_subset")
    for i, (array, label) in enumerate(zip(arrays, labels)):
        folder = target / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array, mode="L").save(folder / f"{i:05d}.png")
    done.write_text(name + "\n")
    return target


def files_sha256(items: list[tuple[Path, int]]) -> str:
    """Hash of the file list, labels and file contents (part of the feature cache key)."""
    digest = hashlib.sha256()
    for path, label in items:
        digest.update(f"{path.name}|{label}|".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
