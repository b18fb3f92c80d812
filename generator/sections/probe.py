"""Section: linear-probe fine-tuning of every model on every dataset (frozen backbone, cached features)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import Field

from ..store.cache import Record, cache_key
from ..data.datasets import DATASET_SOURCES, DatasetMissing, discover_dataset, files_sha256, materialise_builtin
from ..data.images import slugify
from ..models.loaded import LoadedModel
from ..store.safepaths import PathError, confined
from ..config.settings import BatchSize, ConfigError, Float, Int, SectionSettings, Str
from .base import Section

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..analysis.probe import ProbeSettings as ProbeTraining


class ProbeSettings(SectionSettings):
    """Linear-probe fine-tuning (the study's bonus chapter): frozen backbone, new head, every model × dataset."""

    #: name → an ImageFolder-style folder inside ``data_root``, or a built-in: "sklearn:digits", "skimage:lfw_subset".
    datasets: dict[Str, Str] = {"digits": "sklearn:digits", "faces": "skimage:lfw_subset"}
    #: The folder dataset paths are relative to (itself relative to the config file); datasets stay inside it.
    data_root: Path = Path(".")
    epochs: Int = Field(default=10, ge=1)
    lr: Float = Field(default=1e-3, gt=0)
    weight_decay: Float = Field(default=1e-4, ge=0)
    batch_size: Int = Field(default=64, ge=1)
    seed: Int = 0
    #: Seed of the train/val/test split for trees without fixed splits.
    split_seed: Int = 0
    #: Images per forward pass when extracting features; "auto" as in [sections.lime].
    feature_batch_size: BatchSize = "auto"


class ProbeSection(Section):
    Settings = ProbeSettings

    @classmethod
    def check_config(cls, config, source) -> None:
        probe = config.sections.probe
        for name, where in probe.datasets.items():
            key = f"sections.probe.datasets.{name}"
            if where.startswith(("sklearn:", "skimage:")):
                continue
            if ":" in where and not Path(where).exists():
                raise ConfigError(source, key,
                                  f"unknown built-in {where!r}; use sklearn:digits or skimage:lfw_subset, or a folder")
            try:
                confined(probe.data_root, where, "dataset")
            except PathError as exc:
                raise ConfigError(source, key,
                                  f"{exc} (set sections.probe.data_root to the folder that holds it)") from None
    name = "probe"
    title = "Fine-tuning: linear probe"
    template = "sections/probe.md.j2"
    chapter = ("fine-tuning", "Fine-tuning", "chapters/probe_intro.md.j2")
    per_image = False

    def __init__(self, config):
        super().__init__(config)
        self._splits: dict[str, object] = {}

    def units(self) -> list[str]:
        return list(self.settings.datasets)

    def dataset_root(self, name: str) -> Path:
        where = self.settings.datasets[name]
        if where.startswith(("sklearn:", "skimage:")):
            return materialise_builtin(where, self.config.output / "datasets" / slugify(where))
        return confined(self.settings.data_root, where, "dataset")

    def splits(self, name: str):
        if name not in self._splits:
            root = self.dataset_root(name)
            if not root.exists():
                hint = source_hint(name, str(root))
                raise DatasetMissing(f"dataset {name!r} not found at {root}"
                                     + (f"; get it from {hint}" if hint else "; put an ImageFolder tree there"))
            self._splits[name] = discover_dataset(root, self.settings.split_seed)
        return self._splits[name]

    def params(self) -> dict[str, Any]:
        values = super().params()
        # where the datasets lie is not what they hold (unit_params hashes their files): a moved or
        # copied project keeps its cached probes
        values.pop("data_root", None)
        return values

    def unit_params(self, unit: str) -> dict:
        splits = self.splits(unit)
        return {"train": files_sha256(splits.train), "val": files_sha256(splits.val), "test": files_sha256(splits.test),
                "classes": splits.classes, "layout": splits.layout}

    def settings_obj(self) -> ProbeTraining:
        from ..analysis.probe import ProbeSettings as ProbeTraining

        s = self.settings
        return ProbeTraining(epochs=s.epochs, lr=s.lr, weight_decay=s.weight_decay, batch_size=s.batch_size, seed=s.seed)

    def features(self, model: LoadedModel, unit: str, split: str, items) -> tuple[np.ndarray, np.ndarray]:
        """Cached pre-logit features of one split: (n, d) float32 (memory-mapped) and labels (n,)."""
        from timm.data import create_transform

        from ..analysis.probe import extract_features

        transform = create_transform(**model.data_config, is_training=False)
        key = cache_key(weights=model.weights_sha256, arch=model.config.arch, files=files_sha256(items),
                        transform=repr(transform))
        path = self.config.output / "cache" / "features" / f"{key}.npy"
        labels = np.array([y for _, y in items], dtype=np.int64)
        if path.is_file() and self.use_cache:
            try:
                features = np.load(path, mmap_mode="r")
                if features.shape[0] == len(items):
                    return features, labels
            except (ValueError, OSError):
                pass
            path.unlink(missing_ok=True)  # corrupt or stale: recompute
        features = extract_features(model.module, items, transform, path, model.batch_size(self.settings.feature_batch_size), model.device)
        return features, labels

    def compute_unit(self, model: LoadedModel, unit: str) -> Record:
        from ..analysis.probe import new_head, train_probe_on_features

        splits = self.splits(unit)
        train, val, test = (self.features(model, unit, name, items)
                            for name, items in (("train", splits.train), ("val", splits.val), ("test", splits.test)))
        settings = self.settings_obj()
        probe = new_head(model.module.cpu() if model.device.type == "cpu" else model.module, len(splits.classes), settings.seed)
        head = probe.get_classifier().cpu()
        result = train_probe_on_features(head, train, val, test, settings)
        return Record(
            section=self.name, model=model.name, image=slugify(unit) or "dataset",
            arrays={"confusion": result.confusion},
            meta={"model_display": model.display_name, "random_weights": model.random_weights, "dataset": unit,
                  "classes": splits.classes, "layout": splits.layout,
                  "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
                  "feature_dim": int(train[0].shape[1]), "test_accuracy": round(result.test_accuracy, 6),
                  "history": result.history, "settings": settings.__dict__},
        )

    def render(self, record: Record) -> dict[str, Figure]:
        from ..render.finetune import probe_figure

        m = record.meta
        return {"": probe_figure(m["history"], record.arrays["confusion"], m["classes"],
                                 f"{m['model_display']} on {m['dataset']}: test accuracy {100 * m['test_accuracy']:.2f}%")}

    def caption(self, record: Record, figure_id: str = "") -> str:
        m = record.meta
        return (f"{m['model_display']} probed on {m['dataset']} ({m['sizes']['train']} train / {m['sizes']['val']} val / "
                f"{m['sizes']['test']} test images, {len(m['classes'])} classes): training loss, validation accuracy per "
                f"epoch, and the test confusion matrix (rows normalised).")

    def tables(self, record: Record) -> dict[str, pd.DataFrame]:
        return {"": pd.DataFrame(record.meta["history"])}

    def page_extras(self, results) -> dict:
        """The study's table: models as rows, datasets as columns; missing datasets say where to get them."""
        datasets = list(self.settings.datasets)
        models = list(dict.fromkeys(r.model for r in results))
        by = {(r.model, r.meta["dataset"]): r for r in results}
        rows = []
        for model in models:
            row = {"Model": model}
            for d in datasets:
                r = by.get((model, d))
                row[d] = f"{100 * r.meta['test_accuracy']:.2f}%" if r else "missing"
            rows.append(row)
        missing = {}
        for d in datasets:
            if not any((m, d) in by for m in models):
                where = self.settings.datasets[d]
                hint = source_hint(d, where)
                missing[d] = f"not found at {where}" + (f"; get it from {hint}" if hint else "")
        return {"accuracy_table": pd.DataFrame(rows), "missing": missing}


def source_hint(name: str, where: str) -> str | None:
    """Where to download a known study dataset, judged by its config name or path."""
    text = f"{name} {where}".lower()
    return next((source for key, source in DATASET_SOURCES.items() if key in text), None)
