"""The runtime model: an identity (:mod:`generator.models.identity`) plus its module, device, FLOPs and batch size.

A :class:`LoadedModel` answers everything cache keys and pages need from its identity, without
torch. Its ``module`` is loaded on first use, so a build whose results are all cached never
imports torch or timm. :func:`open_model` serves the identity from the memo when the weights
file is unchanged; :func:`load_model` loads the weights at once.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.settings import ModelConfig
from .identity import Family, ModelIdentity, WeightsError, identity_key, write_memo
from .identity import read_memo as read_identity_memo

if TYPE_CHECKING:
    import torch

__all__ = ["ACCELERATOR_BATCH", "Family", "LoadedModel", "WeightsError", "auto_batch_size", "environment_threads",
           "load_model", "open_model"]


@dataclass(eq=False)
class LoadedModel:
    """A model ready to explain.

    Attributes:
        config: the model's config entry.
        identity: what is known without running it (family, data config, classes, weights hash …).
        device_spec: "auto" | "cpu" | "cuda" | "mps" or a torch.device.
        module: the timm model, in eval mode, on ``device``; loaded on first use.
    """

    config: ModelConfig
    identity: ModelIdentity
    device_spec: Any = "cpu"
    _module: Any = field(default=None, repr=False)

    @property
    def module(self) -> torch.nn.Module:
        if self._module is None:
            import torch

            from .loading import load_module

            # First use may come inside a section's inference_mode block: parameters made there would be
            # inference tensors, and a later gradient (gradient rollout) could not go through them.
            with torch.inference_mode(False):
                module, identity = load_module(self.config, self.device)
            if identity.weights_sha256 != self.identity.weights_sha256:
                raise WeightsError(f"model {self.name!r}: its weights changed while this build ran; run it again")
            self._module = module
        return self._module

    @cached_property
    def device(self) -> torch.device:
        from .loading import resolve_device

        return resolve_device(self.device_spec) if isinstance(self.device_spec, str) else self.device_spec

    # identity, by name
    family = property(lambda self: self.identity.family)

    @property
    def adapter(self) -> Any:
        """The model's family adapter (:mod:`generator.families`), found by the family's name."""
        from ..families import family_named

        return family_named(self.family)

    @property
    def capabilities(self) -> frozenset[str]:
        """What this model has (:data:`generator.families.CAPABILITIES`), read off its module at load."""
        return frozenset(self.identity.capabilities)

    def has(self, capability: str) -> bool:
        """Whether the model has ``capability`` (:data:`generator.families.CAPABILITIES`)."""
        return capability in self.capabilities

    def missing(self, needs: frozenset[str] | set[str]) -> list[str]:
        """The needs (sorted) that this model lacks."""
        return sorted(set(needs) - self.capabilities)

    data_config = property(lambda self: self.identity.data_config)
    class_names = property(lambda self: self.identity.class_names)
    weights_sha256 = property(lambda self: self.identity.weights_sha256)
    source = property(lambda self: self.identity.source)
    random_weights = property(lambda self: self.identity.random_weights)
    structure = property(lambda self: self.identity.structure)
    timm_name = property(lambda self: self.identity.timm_name)

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
        from .loading import forward_flops

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
# Not measured on a GPU: accelerators want large batches.
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


def load_model(config: ModelConfig, device: Any = "cpu") -> LoadedModel:
    """Build ``config``'s model with its weights, in eval mode, on ``device``.

    Raises:
        WeightsError: unknown architecture, unreachable hub, missing or mismatching checkpoint.
    """
    from .loading import load_module, resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    module, identity = load_module(config, device)
    return LoadedModel(config=config, identity=identity, device_spec=device, _module=module)


def open_model(config: ModelConfig, device: Any, memo_dir: Path | None, read_memo: bool = True) -> LoadedModel:
    """The model's identity from the memo when it is there, current and intact, else the model itself.

    With ``memo_dir`` None no memo is read or written; with ``read_memo`` False the model is
    loaded and its memo written afresh (``--no-cache``).
    """
    key = identity_key(config) if memo_dir is not None else None
    memo = memo_dir / f"{key}.json" if key else None
    if read_memo and memo is not None:
        identity = read_identity_memo(memo)
        if identity is not None:
            return LoadedModel(config=config, identity=identity, device_spec=device)
    model = load_model(config, device)
    if memo is not None:
        write_memo(memo, model.identity)
    return model


def environment_threads() -> str:
    """torch's intra-op thread count when torch is loaded (it is not when every result was cached)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return "torch not loaded (every result came from the cache)"
    return str(torch.get_num_threads())
