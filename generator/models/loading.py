"""Model loading: weight sources (hub, file, random), timm's data config, class names.

Every source goes through timm: ``hub`` through ``create_model(pretrained=True)``, ``file:``
through the same pretrained path with ``pretrained_cfg_overlay=dict(file=...)`` so timm's
checkpoint filters run, and ``random:`` through a seeded ``create_model(pretrained=False)``.
Checkpoints are only ever read by safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from timm.data import ImageNetInfo, infer_imagenet_subset, resolve_model_data_config

from . import embedded  # noqa: F401  (registers the embedded models with timm)
from ..config.settings import ModelConfig
from ..families import family_of
from .identity import Family, ModelIdentity, WeightsError

__all__ = ["Family", "WeightsError", "forward_flops", "load_module", "preprocess",
           "resolve_device", "state_dict_sha256"]

def forward_flops(module: torch.nn.Module, input_size: tuple[int, int], device: torch.device | str = "cpu") -> int:
    """FLOPs of one forward pass of a single (1, 3, H, W) image, attention matmuls included."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..attention.capture import unfused_attention  # the counter does not see inside fused CPU attention kernels

    x = torch.zeros(1, 3, *input_size, device=device)
    with torch.inference_mode(), unfused_attention(module), FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())


def resolve_device(name: str) -> torch.device:
    """Map "auto" | "cpu" | "cuda" | "mps" to an available torch device, or raise ValueError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but it is not available")
    return torch.device(name)


def state_dict_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over the state dict: sorted names, dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _create(config: ModelConfig, **kwargs) -> torch.nn.Module:
    extra = {"num_classes": config.num_classes} if config.num_classes is not None else {}
    if config.labels != "auto" and config.num_classes is None and not kwargs.get("pretrained"):
        # A random head is sized by the labels; pretrained heads keep their size, and a label
        # list that does not fit them is an error (resolve_class_names), never a new random head.
        extra["num_classes"] = len(config.labels)
    if config.input_size is not None:
        extra["img_size"] = config.input_size  # timm's checkpoint filters resample position embeddings to it
    try:
        return timm.create_model(config.arch, **extra, **dict(config.timm_kwargs), **kwargs)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        if not (isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc)):
            raise _mismatch_or_reraise(config, exc)
        raise WeightsError(
            f"model {config.name!r}: checkpoint refused: it holds pickled objects other than tensors, and "
            "checkpoints are only read with torch.load(weights_only=True). Convert it to .safetensors."
        ) from exc


def _mismatch_or_reraise(config: ModelConfig, exc: RuntimeError) -> Exception:
    """Turn timm's strict-load errors into a WeightsError naming the model; keep anything else."""
    text = str(exc)
    if "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
        err = WeightsError(f"model {config.name!r}: the checkpoint does not fit {config.arch}: {_first_lines(text)}")
        err.__cause__ = exc
        return err
    return exc


def _first_lines(text: str, n: int = 4) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[:n]) + (f"\n… ({len(lines) - n} more lines)" if len(lines) > n else "")


def load_module(config: ModelConfig, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, ModelIdentity]:
    """Build ``config``'s model with its weights, in eval mode, on ``device``; return it and its identity.

    Raises:
        WeightsError: unknown architecture, unreachable hub, missing or mismatching checkpoint.
    """
    if config.is_hf:
        return _load_hf(config, device)
    check_architecture(config)
    kind, arg = config.weights_kind, config.weights_arg
    if kind == "random":
        torch.manual_seed(int(arg))
        module = _create(config, pretrained=False)
        source = f"random init (seed {arg})"
    elif kind == "file":
        path = Path(arg)
        if not path.is_file():
            raise WeightsError(f"model {config.name!r}: weights file not found: {path}")
        overlay = {"file": str(path)}
        if path.suffix == ".npz":
            overlay["custom_load"] = True  # timm's ViT reads big_vision .npz through load_pretrained()
        module = _create(config, pretrained=True, pretrained_cfg_overlay=overlay)
        source = f"file {path.name} (sha256 {file_sha256(path)[:12]}…)"
    elif kind == "hub":
        shipped = _shipped_file(config.arch)
        if shipped is not None:  # an embedded model: timm's pretrained file ships inside this package
            module = _create(config, pretrained=True)
            source = f"shipped file {shipped.name} (sha256 {file_sha256(shipped)[:12]}…)"
        else:
            module = _load_from_hub(config)
            source = f"Hugging Face hub ({module.pretrained_cfg.get('hf_hub_id') or config.arch})"
    else:  # validated by config; kept for direct callers
        raise WeightsError(f"model {config.name!r}: unknown weights source {config.weights!r}")

    family = family_of(module)
    module.eval()
    sha = state_dict_sha256(module)
    device = resolve_device(device) if isinstance(device, str) else device
    module.to(device)
    data_config = model_data_config(module, config)
    class_names = resolve_class_names(config, module)
    return module, ModelIdentity(
        family=family.name,
        data_config=data_config,
        class_names=class_names,
        weights_sha256=sha,
        source=source,
        random_weights=kind == "random",
        structure=family.structure(module),
        timm_name=timm_name(module, config.arch),
        capabilities=tuple(sorted(family.model_capabilities(module))),
    )


def _load_hf(config: ModelConfig, device: torch.device | str) -> tuple[torch.nn.Module, ModelIdentity]:
    """A transformers checkpoint (``arch = "hf:…"``): its own loader, next to its family adapters."""
    from huggingface_hub import constants

    from ..families.hf_loading import load_hf_module

    def hub_problem() -> str | None:
        return "HF_HUB_OFFLINE is set" if _hub_offline() else hub_unreachable(constants.ENDPOINT)

    module, data_config, class_names, source = load_hf_module(config, hub_problem)
    family = family_of(module)
    sha = state_dict_sha256(module)
    module.to(resolve_device(device) if isinstance(device, str) else device)
    return module, ModelIdentity(
        family=family.name, data_config=data_config, class_names=class_names, weights_sha256=sha, source=source,
        random_weights=config.weights_kind == "random", structure=family.structure(module), timm_name="",
        capabilities=tuple(sorted(family.model_capabilities(module))))


def model_data_config(module: torch.nn.Module, config: ModelConfig) -> dict:
    """timm's resolved data config, its input size set to the config's ``img_size`` when there is one
    (timm's pretrained config keeps the size the weights were trained at)."""
    data_config = resolve_model_data_config(module)
    if config.input_size is not None:
        data_config["input_size"] = (int(data_config["input_size"][0]), *config.input_size)
    return data_config


def timm_name(module: torch.nn.Module, arch: str) -> str:
    """``name.tag`` of the pretrained config timm resolved for ``module`` (``arch`` when it has no tag)."""
    cfg = getattr(module, "pretrained_cfg", None) or {}
    base = cfg.get("architecture") or arch.partition(".")[0]
    return f"{base}.{cfg['tag']}" if cfg.get("tag") else arch


def check_architecture(config: ModelConfig) -> None:
    """Accept a timm architecture, optionally with a pretrained tag (``name.tag``); raise otherwise."""
    base, _, tag = config.arch.partition(".")
    if base not in timm.list_models():
        close = timm.list_models(f"*{base.split('_')[0]}*")[:5]
        raise WeightsError(f"model {config.name!r}: unknown timm architecture {base!r}"
                           + (f" (similar: {', '.join(close)})" if close else ""))
    if tag and config.arch not in timm.list_models(pretrained=True):
        tags = [name.partition(".")[2] for name in timm.list_models(f"{base}.*", pretrained=True)]
        raise WeightsError(f"model {config.name!r}: {base} has no pretrained tag {tag!r}"
                           + (f" (timm knows: {', '.join(tags)})" if tags else " (timm knows no tags for it)"))


#: Seconds the hub reachability probe may take in all (DNS, connect, answer).
HUB_PROBE_SECONDS = 6.0


@functools.lru_cache(maxsize=None)
def hub_unreachable(endpoint: str) -> str | None:
    """Why the hub at ``endpoint`` cannot be reached (one quick HEAD request), or None when it answers.

    Asked once per process and endpoint, within :data:`HUB_PROBE_SECONDS`, so that a machine
    without a network fails every hub model at once instead of retrying each file for minutes.
    Proxies set in the environment are honoured (``requests`` reads them). A server error (5xx),
    as a proxy gives when it cannot reach the hub either, counts as unreachable: the hub client
    would retry those for minutes too.
    """
    import threading

    import requests

    outcome: list[str | None] = []

    def probe() -> None:
        try:
            answer = requests.head(endpoint, timeout=(HUB_PROBE_SECONDS / 2, HUB_PROBE_SECONDS / 2),
                                   allow_redirects=False)
            # any other HTTP answer means the hub is reachable
            outcome.append(f"HTTP {answer.status_code} from {endpoint}" if answer.status_code >= 500 else None)
        except requests.RequestException as exc:
            reason = "name resolution failed" if "NameResolution" in str(exc) else type(exc).__name__
            outcome.append(f"{reason} for {endpoint}")

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(HUB_PROBE_SECONDS)
    return outcome[0] if outcome else f"no answer within {HUB_PROBE_SECONDS:.0f} s"


def hub_files(arch: str) -> tuple[str, list[str]]:
    """The hub repository and the file names timm would fetch for ``arch`` (``name`` or ``name.tag``)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None or not cfg.hf_hub_id:
        raise WeightsError(f"{arch} has no weights on the Hugging Face hub in timm's registry")
    filename = cfg.hf_hub_filename or "pytorch_model.bin"
    names = [filename]
    if filename.endswith((".bin", ".pth")):  # timm tries the safetensors twin first
        names.insert(0, "model.safetensors" if filename == "pytorch_model.bin" else filename.rsplit(".", 1)[0] + ".safetensors")
    return cfg.hf_hub_id, names


def _shipped_file(arch: str) -> Path | None:
    """The local file that timm's pretrained config names for ``arch`` when it has no hub repository
    (the embedded models), else None."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None or cfg.hf_hub_id or not cfg.file:
        return None
    return Path(cfg.file)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _download_hint(config: ModelConfig) -> str:
    try:
        repo, names = hub_files(config.arch)
        where = f"https://huggingface.co/{repo}/resolve/main/{names[0]}"
    except WeightsError:
        where = f"the weights of {config.arch}"
    return (f'Download {where} where the hub is reachable and set weights = "file:/path/to/{config.arch}.safetensors" '
            "for this model in the config.")


def _load_from_hub(config: ModelConfig) -> torch.nn.Module:
    """timm's pretrained path; without a reachable hub, timm's own cached file through the same path."""
    from huggingface_hub import constants, try_to_load_from_cache

    why = "HF_HUB_OFFLINE is set" if _hub_offline() else hub_unreachable(constants.ENDPOINT)
    if why is not None:
        repo, names = hub_files(config.arch)
        for name in names:
            cached = try_to_load_from_cache(repo, name)
            if isinstance(cached, str) and Path(cached).is_file():
                return _create(config, pretrained=True, pretrained_cfg_overlay={"file": cached})
        raise WeightsError(
            f"model {config.name!r}: the Hugging Face hub cannot be reached ({why}) and {repo}/{names[0]} is "
            f"not in the local cache. {_download_hint(config)}")
    try:
        return _create(config, pretrained=True)
    except WeightsError:
        raise
    except Exception as exc:  # huggingface_hub raises several unrelated types (OSError, HTTP, offline)
        raise WeightsError(
            f"model {config.name!r}: could not load hub weights for {config.arch} "
            f"({type(exc).__name__}: {_first_lines(str(exc), 2)}). {_download_hint(config)}"
        ) from exc


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_class_names(config: ModelConfig, module: torch.nn.Module) -> tuple[str, ...]:
    """Class names: the config's list, the pretrained config's label names, or timm's ImageNet info."""
    num_classes = int(getattr(module, "num_classes", 0) or 0)
    if config.labels != "auto":
        if len(config.labels) != num_classes:
            raise WeightsError(
                f"model {config.name!r}: {len(config.labels)} labels given but the head has {num_classes} classes"
            )
        return tuple(config.labels)
    names = module.pretrained_cfg.get("label_names")
    if names and len(names) == num_classes:
        return tuple(names)
    subset = infer_imagenet_subset(module)
    if subset:
        info = ImageNetInfo(subset)
        if info.num_classes() == num_classes:
            return tuple(info.index_to_description(i) for i in range(num_classes))
    return tuple(f"class {i}" for i in range(num_classes))


def preprocess(model: Any, rgb: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """Apply the model's own eval transform (timm's resolved data config).

    Args:
        rgb: (H, W, 3) uint8 image.

    Returns:
        view: (h, w, 3) uint8, the resized/cropped image the model sees (for figures);
        x: (3, h, w) float32, normalised with the data config's mean and std.
    """
    from PIL import Image
    from timm.data import create_transform
    from torchvision import transforms as T

    transform = create_transform(**model.data_config, is_training=False)
    steps = [t for t in transform.transforms if not isinstance(t, T.Normalize)]
    unnormalised = T.Compose(steps)(Image.fromarray(rgb))
    unnormalised = unnormalised.float().clamp_(0, 1)
    mean = torch.tensor(model.data_config["mean"]).view(3, 1, 1)
    std = torch.tensor(model.data_config["std"]).view(3, 1, 1)
    x = (unnormalised - mean) / std
    view = (unnormalised.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return view, x
