"""Seeded training of the embedded Fashion-MNIST models (the offline default gallery).

The data come from Debian's ``dataset-fashion-mnist`` package (idx files). The models are
timm's own ``VisionTransformer`` and ``SwinTransformer`` classes, registered in
:mod:`generator.models.embedded`. The result is a safetensors file plus a JSON model card.
"""

from __future__ import annotations

import gzip
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._version import __version__
from ..models.embedded import FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD, weights_path
from ..store.atomic import atomic_write_bytes, atomic_write_text

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetMissingError(FileNotFoundError):
    """The Fashion-MNIST idx files are not installed."""


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def load_fashion_mnist(split: str, root: Path = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Load one split.

    Returns:
        images: (n, 28, 28) uint8; labels: (n,) int64.

    Raises:
        DatasetMissingError: if the idx files are absent, with the command that installs them.
    """
    image_file, label_file = (root / name for name in _FILES[split])
    missing = [str(p) for p in (image_file, label_file) if not p.is_file()]
    if missing:
        raise DatasetMissingError(
            f"Fashion-MNIST files not found: {', '.join(missing)}. Install Debian's package with "
            "`apt-get install dataset-fashion-mnist` (MIT licence), or pass --data-dir to a folder "
            "holding the four idx .gz files."
        )
    return _read_idx(image_file), _read_idx(label_file).astype(np.int64)


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one training run. Defaults are the shipped recipe."""

    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    max_shift: int = 2
    seed: int = 0
    train_limit: int | None = None
    threads: int = 1


def _to_model_input(images: torch.Tensor) -> torch.Tensor:
    """(n, 28, 28) uint8 → (n, 3, 28, 28) float, normalised as the model's data config says."""
    x = images.float().div_(255.0).unsqueeze(1).expand(-1, 3, -1, -1)
    mean = torch.tensor(FASHION_MNIST_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(FASHION_MNIST_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _augment(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to ``max_shift`` pixels (zero fill) and horizontal flips. (n, 28, 28) uint8."""
    n, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(images)
    for i in range(n):
        dy, dx = offsets[i].tolist()
        crop = padded[i, dy : dy + h, dx : dx + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


@torch.inference_mode()
def evaluate(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    """Top-1 accuracy in [0, 1] on uint8 (n, 28, 28) images."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = _to_model_input(torch.from_numpy(images[start : start + batch_size]))
        pred = model(x).argmax(-1)
        correct += int((pred == torch.from_numpy(labels[start : start + batch_size])).sum())
    return correct / len(images)


def train(
    model_name: str,
    settings: TrainSettings,
    data_dir: Path = FASHION_MNIST_DIR,
    log: Callable[[str], None] = print,
) -> tuple[torch.nn.Module, dict]:
    """Train ``model_name`` (an embedded timm model) from scratch; return it and its model card."""
    import timm

    from ..models import embedded  # noqa: F401  (registers the models)

    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    train_x, train_y = load_fashion_mnist("train", data_dir)
    test_x, test_y = load_fashion_mnist("test", data_dir)
    if settings.train_limit:
        train_x, train_y = train_x[: settings.train_limit], train_y[: settings.train_limit]

    model = timm.create_model(model_name, pretrained=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train_x) / settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    warmup_steps = max(1, int(settings.warmup_epochs * steps_per_epoch))

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    images_t, labels_t = torch.from_numpy(train_x), torch.from_numpy(train_y)
    history = []
    started = time.perf_counter()
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(images_t), generator=generator)
        loss_sum, seen = 0.0, 0
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            x = _to_model_input(_augment(images_t[idx], settings.max_shift, generator))
            loss = F.cross_entropy(model(x), labels_t[idx], label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
        test_acc = evaluate(model, test_x, test_y)
        history.append({"epoch": epoch + 1, "train_loss": round(loss_sum / seen, 5), "test_acc": round(test_acc, 5)})
        log(f"{model_name} epoch {epoch + 1}/{settings.epochs}: loss {loss_sum / seen:.4f}, test acc {test_acc:.4f} "
            f"({time.perf_counter() - started:.0f}s)")
    model.eval()
    card = {
        "model": model_name,
        "architecture_class": type(model).__name__,
        "architecture_args": _arch_args(model_name),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": "Fashion-MNIST (Zalando Research, MIT licence), 60k train / 10k test, "
        "from Debian's dataset-fashion-mnist package",
        "classes": list(FASHION_MNIST_CLASSES),
        "preprocessing": {"mean": FASHION_MNIST_MEAN, "std": FASHION_MNIST_STD, "input_size": [3, 28, 28],
                          "note": "grey replicated to RGB"},
        "settings": settings.__dict__,
        "epochs": settings.epochs,
        "seed": settings.seed,
        "test_accuracy": history[-1]["test_acc"] if history else None,
        # the first 1,000 test images, shipped as tests/data/fashion_mnist_test_1k.npz for the test suite
        "test_subset_1k_accuracy": round(evaluate(model, test_x[:1000], test_y[:1000]), 5),
        "history": history,
        "train_seconds": round(time.perf_counter() - started, 1),
        "trained_on": f"{platform.machine()} CPU, {settings.threads} thread(s), torch {torch.__version__}",
        "generator_version": __version__,
        "licence": "MIT (weights and card), as the Fashion-MNIST data",
    }
    return model, card


def _arch_args(model_name: str) -> dict:
    from ..models.embedded import SWIN_ARGS, SWIN_NAME, VIT_ARGS, VIT_NAME

    return {VIT_NAME: VIT_ARGS, SWIN_NAME: SWIN_ARGS}[model_name]


def save(model: torch.nn.Module, card: dict, out_dir: Path, command: str) -> Path:
    """Write ``<name>.safetensors`` and ``<name>.json`` atomically; return the weights path."""
    from safetensors.torch import save as save_safetensors

    out_dir.mkdir(parents=True, exist_ok=True)
    name = card["model"]
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    target = out_dir / weights_path(name).name
    atomic_write_bytes(target, save_safetensors(state, metadata={"model": name}))
    card = {**card, "command": command, "weights_file": target.name}
    atomic_write_text(out_dir / f"{name}.json", json.dumps(card, indent=2, sort_keys=True, default=list) + "\n")
    return target
