"""Linear-probe fine-tuning: frozen backbone, timm's ``reset_classifier``, cached features.

The backbone is frozen and evaluation transforms have no randomness, so each image's
pre-logit features are computed once (streamed to a ``.npy`` on disk) and every epoch of
head training runs on them. :func:`train_probe_plain` is the reference loop that pushes the
images through the whole model every epoch; with the same seed both give the same head.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.datasets import (DATASET_SOURCES, IMAGE_SUFFIXES, DatasetError, DatasetSplits, discover_dataset,
                             files_sha256, materialise_builtin)  # noqa: F401  (re-exported: the probe's public API)

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
