"""What the pipeline knows about a model before (and without) its weights: importable without torch.

A :class:`LoadedModel` carries everything cache keys and pages need (family, data config,
class names, weights hash, structure). Its ``module`` is loaded on first use. :func:`open_model`
serves that identity from a small memo when the weights file is unchanged, so a build whose
results are all cached never imports torch or timm nor reads the weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import __version__
from .atomic import atomic_write_text
from .cache import cache_key, canonical_json
from .config import ModelConfig

if TYPE_CHECKING:
    import torch

__all__ = ["Family", "LoadedModel", "WeightsError", "auto_batch_size", "identity_key", "open_model"]

Family = Literal["vit", "swin"]


class WeightsError(RuntimeError):
    """Weights could not be obtained or do not fit the architecture."""


@dataclass(eq=False)
class LoadedModel:
    """A model ready to explain.

    Attributes:
        config: the model's config entry.
        family: "vit" or "swin".
        data_config: timm's resolved data config (input_size, mean, std, interpolation, crop).
        class_names: one name per output class.
        weights_sha256: SHA-256 over the state dict (names, dtypes, shapes, bytes).
        source: a human description of where the weights came from.
        random_weights: True for ``random:SEED``; every page and figure says so.
        structure: blocks, heads and grid in words (for the pages).
        timm_name: the timm ``name.tag`` whose pretrained config set the preprocessing and labels
            (the tag timm resolved when the config names none).
        device_spec: "auto" | "cpu" | "cuda" | "mps" or a torch.device.
        module: the timm model, in eval mode, on ``device``; loaded on first use.
    """

    config: ModelConfig
    family: Family
    data_config: dict
    class_names: tuple[str, ...]
    weights_sha256: str
    source: str
    random_weights: bool
    structure: str
    timm_name: str = ""
    device_spec: Any = "cpu"
    _module: Any = field(default=None, repr=False)

    @property
    def module(self) -> torch.nn.Module:
        if self._module is None:
            from .models import load_model

            fresh = load_model(self.config, self.device)
            if fresh.weights_sha256 != self.weights_sha256:
                raise WeightsError(f"model {self.name!r}: its weights changed while this build ran; run it again")
            self._module = fresh._module
        return self._module

    @cached_property
    def device(self) -> torch.device:
        from .models import resolve_device

        return resolve_device(self.device_spec) if isinstance(self.device_spec, str) else self.device_spec

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def display_name(self) -> str:
        return f"{self.name} (random weights)" if self.random_weights else self.name

    @property
    def input_size(self) -> tuple[int, int]:
        _, h, w = self.data_config["input_size"]
        return int(h), int(w)

    @cached_property
    def flops_per_image(self) -> int:
        """Forward FLOPs of one image at the model's input size (torch's FLOP counter)."""
        from .models import forward_flops

        return forward_flops(self.module, self.input_size, self.device)

    def batch_size(self, setting: int | str) -> int:
        """Images per forward pass: ``setting`` itself, or for "auto" :func:`auto_batch_size`."""
        return setting if isinstance(setting, int) else auto_batch_size(self.flops_per_image, self.device)


# From `make bench`'s batch sweep (bench/README.md) on a 2-core CPU: ViT-B/16 (35 GFLOP per image)
# peaks at batch 4–10 and loses 7 % at 16–64; Swin-B (31 GFLOP) peaks at 8; the embedded ViT
# and Swin (< 0.1 GFLOP) plateau from 32 to 256 and fall off at 512. A batch of about 300 GFLOP,
# rounded down to a power of two within [4, 64], lands on every measured optimum.
CPU_BATCH_FLOPS = 300e9
CPU_BATCH_RANGE = (4, 64)
# Not measured (no GPU was lent to this project yet): accelerators want large batches.
ACCELERATOR_BATCH = 64


def auto_batch_size(flops_per_image: float, device: Any = "cpu") -> int:
    """The default images per forward pass for a model of ``flops_per_image`` on ``device``."""
    kind = device if isinstance(device, str) else device.type
    if kind.split(":")[0] != "cpu":
        return ACCELERATOR_BATCH
    low, high = CPU_BATCH_RANGE
    if flops_per_image <= 0:
        return high
    return int(min(high, max(low, 2 ** math.floor(math.log2(max(1.0, CPU_BATCH_FLOPS / flops_per_image))))))


# ------------------------------------------------------------------------------ identity memo


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def identity_key(config: ModelConfig) -> str | None:
    """What the model's identity depends on, hashed; None when it cannot be known without loading.

    ``file:`` weights are identified by their path, size, inode and mtime (a changed file loads
    again); ``random:`` by the seed. Hub weights can change under the same name: always loaded.
    """
    if config.weights_kind == "file":
        path = Path(config.weights_arg)
        try:
            stat = path.stat()
        except OSError:
            return None
        weights: Any = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                        "inode": stat.st_ino}
    elif config.weights_kind == "random":
        weights = {"seed": config.weights_arg}
    else:
        return None
    return cache_key(kind="model-identity", generator=__version__, config=asdict(config), weights=weights,
                     torch=_package("torch"), timm=_package("timm"))


_IDENTITY_FIELDS = ("family", "data_config", "class_names", "weights_sha256", "source", "random_weights", "structure",
                    "timm_name")


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def open_model(config: ModelConfig, device: Any, memo_dir: Path | None, read_memo: bool = True) -> LoadedModel:
    """The model's identity from the memo when it is there, current and intact, else the model itself.

    The memo carries a SHA-256 of its content: a memo that was edited or damaged is discarded,
    and the model is loaded and the memo written again.

    With ``memo_dir`` None no memo is read or written; with ``read_memo`` False the model is
    loaded and its memo written afresh (``--no-cache``).
    """
    key = identity_key(config) if memo_dir is not None else None
    memo = memo_dir / f"{key}.json" if key else None
    if read_memo and memo is not None and memo.is_file():
        try:
            envelope = json.loads(memo.read_text(encoding="utf-8"))
            saved = envelope["identity"]
            if envelope["sha256"] != hashlib.sha256(canonical_json(saved).encode("utf-8")).hexdigest():
                raise ValueError("memo content does not match its hash")  # tampered or damaged: rebuilt below
            fields = {name: saved[name] for name in _IDENTITY_FIELDS}
            fields["data_config"] = {k: _tuples(v) for k, v in fields["data_config"].items()}
            fields["class_names"] = tuple(fields["class_names"])
            return LoadedModel(config=config, device_spec=device, **fields)
        except (ValueError, KeyError, TypeError, OSError):
            memo.unlink(missing_ok=True)  # unreadable: load and write it again
    from .models import load_model

    model = load_model(config, device)
    if memo is not None:
        memo.parent.mkdir(parents=True, exist_ok=True)
        identity = json.loads(canonical_json({name: getattr(model, name) for name in _IDENTITY_FIELDS}))
        digest = hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()
        atomic_write_text(memo, canonical_json({"identity": identity, "sha256": digest}))
    return model


def environment_threads() -> str:
    """torch's intra-op thread count when torch is loaded (it is not when every result was cached)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return "torch not loaded (every result came from the cache)"
    return str(torch.get_num_threads())
