"""What a build of the tiny configs must produce, written out by hand from the README.

A job is ``(section name, model name, image slug or unit)``. The tables below are this test
suite's own statement of which section explains which model, and which run per image: they do
not come from the section registry or the planner, so a planner that drops or invents a job fails
the tests. A section added to the registry without a row here fails ``check_tables_cover``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

#: Section → the tiny models it explains (the README's family table: heads and rollout need a
#: ViT's class-token attention, swin needs windows, tokens needs global attention rows; the rest
#: explain every model).
SECTION_MODELS: dict[str, set[str]] = {
    "heads": {"Tiny ViT"},
    "rollout": {"Tiny ViT"},
    "swin": {"Tiny Swin"},
    "lime": {"Tiny ViT", "Tiny Swin"},
    "maps": {"Tiny ViT", "Tiny Swin"},
    "perturb": {"Tiny ViT", "Tiny Swin"},
    "faithfulness": {"Tiny ViT", "Tiny Swin"},
    "explorer": {"Tiny ViT", "Tiny Swin"},
    "stats": {"Tiny ViT", "Tiny Swin"},
    "tokens": {"Tiny ViT"},
    "probe": {"Tiny ViT", "Tiny Swin"},
}

#: Sections that are off unless a config turns them on (the README: tokens).
DEFAULT_OFF = {"tokens"}

#: Model name → family for the two tiny models.
TINY_FAMILIES = {"Tiny ViT": "vit", "Tiny Swin": "swin"}

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}

#: The slugs of the test images, by hand: lower case, every run of other characters one hyphen.
SLUGS = {"synthetic 0.png": "synthetic-0", "synthetic 1.png": "synthetic-1", "synthetic 2.png": "synthetic-2",
         "<b>x&y<|b>.png": "b-x-y-b"}

Job = tuple[str, str, str]


def check_tables_cover(section_names: list[str]) -> None:
    """Fail when the registry has a section this file does not describe (or the other way round)."""
    assert set(section_names) == set(SECTION_MODELS), (sorted(section_names), sorted(SECTION_MODELS))


def expected_jobs(config: Path, only: str | None = None) -> set[Job]:
    """Every job a build of ``config`` runs when nothing fails.

    ``only`` names the one section a per-section command (``vit-gallery heads``) runs, whatever
    its ``enabled`` setting. Per image: every image file of the folder (perturb: those with a
    ``<name>.variants.toml``). Units: stats has one, ``image-set``; the probe one per dataset whose
    folder is under ``data_root``.
    """
    table = tomllib.loads(config.read_text(encoding="utf-8"))
    root = config.parent
    images = sorted(p.name for p in (root / table["images"]).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    models = [m["name"] for m in table["models"]]
    sections = table.get("sections", {})
    jobs: set[Job] = set()
    for name, explains in SECTION_MODELS.items():
        settings = sections.get(name, {})
        if (name != only) if only is not None else not settings.get("enabled", name not in DEFAULT_OFF):
            continue
        if name == "stats":
            targets = ["image-set"]
        elif name == "probe":
            data_root = root / settings.get("data_root", ".")
            targets = [unit for unit, where in settings.get("datasets", {}).items() if (data_root / where).is_dir()]
        elif name == "perturb":
            folder = root / table["images"]
            targets = [SLUGS[i] for i in images if (folder / f"{i}.variants.toml").is_file()]
        else:
            targets = [SLUGS[i] for i in images]
        jobs |= {(name, model, target) for model in models if model in explains for target in targets}
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
