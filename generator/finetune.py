"""Linear-probe fine-tuning: frozen backbone, timm's ``reset_classifier``, cached features.

The backbone is frozen and evaluation transforms have no randomness, so each image's
pre-logit features are computed once (streamed to a ``.npy`` on disk) and every epoch of
head training runs on them. :func:`train_probe_plain` is the reference loop that pushes the
images through the whole model every epoch; with the same seed both give the same head.
"""

from __future__ import annotations

import copy
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "DatasetError",
    "DatasetSplits",
    "ProbeResult",
    "ProbeSettings",
    "discover_dataset",
    "extract_features",
    "materialise_builtin",
    "train_probe_on_features",
    "train_probe_plain",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
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


@dataclass(frozen=True)
class ProbeSettings:
    """The study's baseline: 10 epochs, lr 1e-3, weight decay 1e-4, constant rate, AdamW."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    seed: int = 0


@dataclass
class ProbeResult:
    test_accuracy: float
    history: list[dict] = field(default_factory=list)  # per epoch: train_loss, val_accuracy
    confusion: np.ndarray | None = None  # (classes, classes): rows true, columns predicted
    head_state: dict | None = None


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


# --------------------------------------------------------------------------- features and training


def _load_batch(items, transform) -> torch.Tensor:
    images = []
    for path, _ in items:
        try:
            with Image.open(path) as image:
                images.append(transform(image.convert("RGB")))
        except Exception as exc:
            raise DatasetError(f"unreadable image {path}: {exc}") from None
    return torch.stack(images)


def pre_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The features the classifier head sees: (batch, features)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def extract_features(model: torch.nn.Module, items: list[tuple[Path, int]], transform: Callable, out: Path,
                     batch_size: int = 64, device: torch.device | str = "cpu") -> np.ndarray:
    """Pre-logit features of every item, streamed batch by batch into ``out`` (.npy), returned memory-mapped.

    Returns:
        (len(items), features) float32 array (memory-mapped from ``out``).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.npy")
    memmap = None
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            x = _load_batch(items[start : start + batch_size], transform).to(device)
            feats = pre_logits(model, x).float().cpu().numpy()
            if memmap is None:
                memmap = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(items), feats.shape[1]))
            memmap[start : start + len(feats)] = feats
    memmap.flush()
    del memmap
    tmp.replace(out)
    return np.load(out, mmap_mode="r")


def new_head(model: torch.nn.Module, num_classes: int, seed: int) -> torch.nn.Module:
    """A copy of ``model`` whose classifier timm's ``reset_classifier`` replaced, under ``seed``."""
    probe = copy.deepcopy(model)
    torch.manual_seed(seed)
    probe.reset_classifier(num_classes)
    probe.eval()
    for p in probe.parameters():
        p.requires_grad_(False)
    for p in probe.get_classifier().parameters():
        p.requires_grad_(True)
    return probe


def _order(n: int, epoch: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))


def _confusion(true: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (true, pred), 1)
    return matrix


def train_probe_on_features(head: torch.nn.Module, train: tuple[np.ndarray, np.ndarray],
                            val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                            settings: ProbeSettings) -> ProbeResult:
    """Train ``head`` (the classifier module) on cached features.

    Args:
        train, val, test: (features (n, d) float32, labels (n,) int64).
    """
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    x_train = torch.from_numpy(np.array(train[0], dtype=np.float32))  # a writable copy of the (memory-mapped) features
    y_train = torch.from_numpy(train[1])
    history = []
    for epoch in range(settings.epochs):
        head.train()
        total, seen = 0.0, 0
        for idx in _order(len(x_train), epoch, settings.seed).split(settings.batch_size):
            loss = F.cross_entropy(head(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        history.append({"epoch": epoch + 1, "train_loss": round(total / seen, 6),
                        "val_accuracy": round(_accuracy(head, *val), 6)})
    head.eval()
    with torch.no_grad():
        pred = head(torch.from_numpy(np.array(test[0], dtype=np.float32))).argmax(-1).numpy()
    n_classes = head.out_features if hasattr(head, "out_features") else int(pred.max()) + 1
    return ProbeResult(test_accuracy=float((pred == test[1]).mean()), history=history,
                       confusion=_confusion(test[1], pred, n_classes),
                       head_state={k: v.detach().clone() for k, v in head.state_dict().items()})


def _accuracy(head, features, labels) -> float:
    head.eval()
    with torch.no_grad():
        pred = head(torch.from_numpy(np.array(features, dtype=np.float32))).argmax(-1).numpy()
    return float((pred == labels).mean()) if len(labels) else float("nan")


def train_probe_plain(probe: torch.nn.Module, splits: DatasetSplits, transform: Callable,
                      settings: ProbeSettings) -> ProbeResult:
    """The reference loop: every epoch pushes the images through the whole (frozen) model."""
    head = probe.get_classifier()
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    history = []

    def predict(items):
        with torch.no_grad():
            return torch.cat([probe(_load_batch(items[s : s + 64], transform)).argmax(-1)
                              for s in range(0, len(items), 64)]).numpy()

    for epoch in range(settings.epochs):
        total, seen = 0.0, 0
        for idx in _order(len(splits.train), epoch, settings.seed).split(settings.batch_size):
            batch = [splits.train[i] for i in idx.tolist()]
            x = _load_batch(batch, transform)
            y = torch.tensor([label for _, label in batch])
            loss = F.cross_entropy(probe(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        val_labels = np.array([y for _, y in splits.val])
        history.append({"epoch": epoch + 1, "train_loss": round(total / seen, 6),
                        "val_accuracy": round(float((predict(splits.val) == val_labels).mean()), 6)})
    test_labels = np.array([y for _, y in splits.test])
    pred = predict(splits.test)
    return ProbeResult(test_accuracy=float((pred == test_labels).mean()), history=history,
                       confusion=_confusion(test_labels, pred, len(splits.classes)),
                       head_state={k: v.detach().clone() for k, v in head.state_dict().items()})
