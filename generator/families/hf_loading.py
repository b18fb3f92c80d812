"""Loading ``hf:`` models: Hugging Face ``transformers`` checkpoints, parallel to timm's sources.

``arch = "hf:REPO"`` names the checkpoint (a hub repository, or a ``save_pretrained`` folder);
``weights`` is ``hub`` (``from_pretrained`` from the hub or its local cache), ``file:FOLDER`` (a
``save_pretrained`` folder whose ``config.json`` decides the architecture) or ``random:SEED`` (the
architecture of the folder's or the hub's config, seeded random weights). Weights are read from
safetensors only, and no checkpoint's own code ever runs: a config that asks for remote code
(``auto_map``) is refused. The image processor's resize, crop and normalisation become the model's
data config; ``id2label`` its class names.

``transformers`` is an optional extra: without it an ``hf:`` model fails alone, with one line
saying what to install.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import torch

from ..models.identity import WeightsError
from ..config.settings import ModelConfig

__all__ = ["HF_PREFIX", "INSTALL_HINT", "SUPPORTED_CLASSES", "data_config_from_processor", "load_hf_module"]

HF_PREFIX = "hf:"
INSTALL_HINT = "pip install 'vit-gallery[hf]'"

#: The transformers model classes the hf adapters explain, by the name a config's ``architectures`` gives.
SUPPORTED_CLASSES = (
    "ViTForImageClassification", "ViTModel",
    "DeiTForImageClassification", "DeiTForImageClassificationWithTeacher", "DeiTModel",
    "Dinov2ForImageClassification", "Dinov2Model",
    "Dinov2WithRegistersForImageClassification", "Dinov2WithRegistersModel",
    "BeitForImageClassification", "BeitModel",
    "SwinForImageClassification", "SwinModel",
)

#: PIL's resampling filters (the processors' ``resample``) by timm's interpolation names.
_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _transformers(config: ModelConfig) -> Any:
    try:
        import transformers
    except ImportError:
        raise WeightsError(f"model {config.name!r}: {config.arch} is a Hugging Face transformers model and "
                           f"transformers is not installed; install it with: {INSTALL_HINT}") from None
    return transformers


def _where(config: ModelConfig) -> tuple[str, bool]:
    """(what from_pretrained reads, whether it is a local folder) for ``config``."""
    if config.weights_kind == "file":
        return config.weights_arg, True
    name = config.arch[len(HF_PREFIX):]
    return name, Path(name).is_dir()


def _check_folder(config: ModelConfig, folder: Path, weights: bool) -> None:
    """A save_pretrained folder: its config.json asks for no remote code; with ``weights``, it holds safetensors."""
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise WeightsError(f"model {config.name!r}: {folder} has no config.json; give the folder save_pretrained wrote")
    _refuse_remote_code(config, json.loads(cfg.read_text(encoding="utf-8")), str(folder))
    if weights and not any(folder.glob("*.safetensors")):
        found = ", ".join(sorted(p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"}))
        raise WeightsError(
            f"model {config.name!r}: {folder} holds no .safetensors weights" + (f" (only {found})" if found else "")
            + "; only safetensors are read (pickled checkpoints can run code). Save it again with "
              "save_pretrained(folder, safe_serialization=True).")


def _refuse_remote_code(config: ModelConfig, cfg: dict, where: str) -> None:
    if cfg.get("auto_map"):
        raise WeightsError(f"model {config.name!r}: {where} asks for remote code (auto_map in its config.json); "
                           "checkpoints that bring their own model code are refused, never run")


def _hub_error(config: ModelConfig, repo: str, why: str) -> WeightsError:
    return WeightsError(
        f"model {config.name!r}: the Hugging Face hub cannot be reached ({why}) and {repo} is not in the local "
        f"cache. Where the hub is reachable, save it with from_pretrained({repo!r}).save_pretrained(FOLDER) and the "
        f"image processor's save_pretrained(FOLDER), then set weights = \"file:FOLDER\" for this model in the config.")


def _pretrained(config: ModelConfig, load, repo: str, local: bool, hub_problem: Callable[[], str | None]) -> Any:
    """``load(repo, **kwargs)`` (a from_pretrained), offline-aware for a hub repository."""
    kwargs: dict[str, Any] = {}
    if not local:
        why = hub_problem()
        if why is not None:
            kwargs["local_files_only"] = True  # the local cache may still hold it
            try:
                return load(repo, **kwargs)
            except OSError as exc:
                raise _hub_error(config, repo, why) from exc
    try:
        return load(repo, **kwargs)
    except OSError as exc:
        raise WeightsError(f"model {config.name!r}: could not load {repo}: {str(exc).strip().splitlines()[0]}") from exc


def _model_class(config: ModelConfig, transformers: Any, hf_config: Any) -> type:
    names = list(getattr(hf_config, "architectures", None) or [])
    for name in names:
        if name in SUPPORTED_CLASSES:
            return getattr(transformers, name)
    raise WeightsError(f"model {config.name!r}: {', '.join(names) or 'a config without architectures'} is not a "
                       f"supported transformers model (supported: {', '.join(SUPPORTED_CLASSES)})")


def _crop_pct(crop: int, size: int) -> float:
    """crop / size, nudged down until timm's ``floor(crop / crop_pct)`` gives ``size`` back."""
    pct = crop / size
    while math.floor(crop / pct) < size:
        pct = math.nextafter(pct, 0.0)
    return pct


def data_config_from_processor(processor: Any) -> dict:
    """The image processor's resize, crop and normalisation as timm's data config (what preprocessing reads).

    A (height, width) resize is timm's "squash" resize, then the optional centre crop; a shortest-edge
    resize is timm's "center" mode, then the crop.

    Raises:
        ValueError: a processor whose resize and crop timm's eval transform cannot reproduce.
    """
    size = processor.size
    crop = processor.crop_size if getattr(processor, "do_center_crop", False) else None
    if not getattr(processor, "do_resize", True):
        raise ValueError("the image processor does not resize; the model needs a fixed input size")
    if getattr(size, "height", None) and getattr(size, "width", None):
        mode, scaled = "squash", (int(size.height), int(size.width))
        out = (int(crop.height), int(crop.width)) if crop else scaled
        pcts = {_crop_pct(o, s) for o, s in zip(out, scaled)}
        if len(pcts) != 1 and abs(out[0] / scaled[0] - out[1] / scaled[1]) > 1e-9:
            raise ValueError(f"crop {out} of resize {scaled} differs in height and width")
        pct = min(pcts)
    elif getattr(size, "shortest_edge", None) and crop:
        mode, out = "center", (int(crop.height), int(crop.width))
        if out[0] != out[1]:
            raise ValueError(f"a shortest-edge resize with a non-square crop {out}")
        pct = _crop_pct(out[0], int(size.shortest_edge))
    else:
        raise ValueError(f"unsupported resize {dict(size)} without a centre crop")
    resample = int(getattr(processor, "resample", 3))
    normalise = getattr(processor, "do_normalize", True)
    return {
        "input_size": (3, *out),
        "interpolation": _INTERPOLATION.get(resample, "bicubic"),
        "mean": tuple(float(v) for v in processor.image_mean) if normalise else (0.0, 0.0, 0.0),
        "std": tuple(float(v) for v in processor.image_std) if normalise else (1.0, 1.0, 1.0),
        "crop_pct": pct,
        "crop_mode": mode,
    }


def _class_names(config: ModelConfig, num_classes: int, hf_config: Any) -> tuple[str, ...]:
    if config.labels != "auto":
        if len(config.labels) != num_classes:
            raise WeightsError(f"model {config.name!r}: {len(config.labels)} labels given but the head has "
                               f"{num_classes} classes")
        return tuple(config.labels)
    id2label = {int(k): str(v) for k, v in (getattr(hf_config, "id2label", None) or {}).items()}
    return tuple(id2label.get(i, f"class {i}") for i in range(num_classes))


def load_hf_module(config: ModelConfig, hub_problem: Callable[[], str | None]
                   ) -> tuple[torch.nn.Module, dict, tuple[str, ...], str]:
    """Build ``config``'s transformers model in eval mode, wrapped (:class:`~generator.families.hf_model.HFModel`).

    Args:
        hub_problem: why the hub cannot be asked now (offline, unreachable), or None.

    Returns:
        the module, its data config, its class names and a description of the weights' source.

    Raises:
        WeightsError: transformers missing, an unreachable hub, a folder without config or safetensors, remote
            code, an unsupported architecture, or a processor the data config cannot express.
    """
    transformers = _transformers(config)
    from .hf_model import HFModel

    repo, local = _where(config)
    kind = config.weights_kind
    if local:
        _check_folder(config, Path(repo), weights=kind != "random")
    hf_config = _pretrained(config, transformers.AutoConfig.from_pretrained, repo, local, hub_problem)
    _refuse_remote_code(config, hf_config.to_dict(), repo)
    cls = _model_class(config, transformers, hf_config)
    if kind == "random":
        if config.labels != "auto":  # as for timm: a random head is sized by the labels
            hf_config.id2label = dict(enumerate(config.labels))
            hf_config.label2id = {name: i for i, name in enumerate(config.labels)}
        torch.manual_seed(int(config.weights_arg))
        hf = cls(hf_config)
        source = f"random init (seed {config.weights_arg}) of {repo}'s config"
    else:
        hf = _pretrained(config, lambda r, **kw: cls.from_pretrained(r, use_safetensors=True, **kw), repo, local,
                         hub_problem)
        source = f"save_pretrained folder {Path(repo).name}" if local else f"Hugging Face hub ({repo})"
    processor = _pretrained(config, transformers.AutoImageProcessor.from_pretrained, repo, local, hub_problem)
    try:
        data_config = data_config_from_processor(processor)
    except ValueError as exc:
        raise WeightsError(f"model {config.name!r}: its image processor ({type(processor).__name__}): {exc}") from None
    module = HFModel(hf.eval()).eval()
    with torch.inference_mode(False), torch.no_grad():
        # transformers builds some index tensors on first use and caches them process-wide (BEiT's relative
        # position index): built here, outside inference mode, later gradient passes can use them.
        module(torch.zeros(1, *data_config["input_size"]))
    return module, data_config, _class_names(config, module.num_classes, hf_config), f"{source}, transformers {cls.__name__}"
