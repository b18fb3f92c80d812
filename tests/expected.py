"""What a build must produce, derived from its config and the section registry.

A job is ``(section name, model name, image slug)``. A build runs one job per enabled section ×
model whose family the section explains × image the section applies to, and one per section ×
model × unit (a dataset) for sections that do not run per image. Counting from here keeps the
tests right when a section is added, and a missing job still fails them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from generator.config import load_config
from generator.images import scan_images, slugify
from generator.sections import SECTIONS

#: Model name → family for the two models of ``conftest.tiny_config_text``.
TINY_FAMILIES: Mapping[str, str] = {"Tiny ViT": "vit", "Tiny Swin": "swin"}

Job = tuple[str, str, str]


def expected_jobs(config: Path, families: Mapping[str, str] = TINY_FAMILIES, only: str | None = None) -> set[Job]:
    """Every job a build of ``config`` runs when nothing fails.

    ``only`` names the one section a per-section command (``vit-gallery heads``) runs, whatever
    its ``enabled`` setting.
    """
    cfg = load_config(config)
    images, _ = scan_images(cfg.images)
    jobs: set[Job] = set()
    for cls in SECTIONS:
        section = cls(cfg)
        runs = section.name == only if only is not None else section.enabled()
        if not runs:
            continue
        models = [m.name for m in cfg.models if families[m.name] in section.families]
        if section.per_image:
            targets = [image.slug for image in images if section.applies_to_image(image)]
        else:
            targets = [slugify(unit) or "unit" for unit in section.units()]
        jobs |= {(section.name, model, target) for model in models for target in targets}
    return jobs


def of_section(jobs: set[Job], name: str) -> set[Job]:
    return {job for job in jobs if job[0] == name}


def of_model(jobs: set[Job], name: str) -> set[Job]:
    return {job for job in jobs if job[1] == name}


def written_jobs(docs: Path) -> set[Job]:
    """The jobs whose data file ``docs/data/<section>/<model>/<image>.json`` a build wrote."""
    jobs = set()
    for path in (docs / "data").rglob("*.json"):
        payload = json.loads(path.read_text(encoding="utf-8"))
        jobs.add((payload["section"], payload["model"], payload["image"]))
    return jobs


def summary(jobs: set[Job], cached: int) -> str:
    """The counts a build prints at its end: ``…models: N results (M from cache)``."""
    return f": {len(jobs)} results ({cached} from cache)"
