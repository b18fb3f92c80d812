"""Checking a published gallery: ``verify(folder) -> VerifyResult`` (``vit-gallery verify``).

Two checks, in this order:

1. **Files.** Every file the build published (pages, data files, tables, figures, explorer files,
   the built site) is hashed and compared with the build's manifest (:mod:`generator.site.manifest`):
   a file that differs, is missing, or is not listed is named.
2. **Numbers.** A seeded sample of jobs (``sample`` per section, or all of them) is computed again
   with the same machinery a build uses (:func:`generator.pipeline.plan.plan_model`: the same config,
   models, images, section settings and cache keys), nothing read from or written to the
   build's cache, and each recomputed result is walked against the published data file
   (``data/<section>/<model>/<image>.json``), number by number. A result matches when its
   largest absolute difference is within its section's tolerance: zero (exact) on the device
   and package versions the manifest records, :data:`DRIFT_TOLERANCE` otherwise.

Before any compute, the weights of every model are hashed and the package versions read; when
either differs from the manifest, verification is refused (:class:`VerifyError`, exit 3) and
the message says which, unless ``allow_drift``. Bad input (no folder, no manifest, an
unreadable or edited manifest, no config) is a :class:`VerifyError` with exit status 2.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .site.manifest import MANIFEST, file_hashes, manifest_digest, sha256_file

__all__ = ["DRIFT_TOLERANCE", "FileProblem", "NumberCheck", "SectionCheck", "VerifyError", "VerifyResult",
           "compare_numbers", "verify"]

#: Absolute tolerance per section when the device or a package version differs from the manifest's
#: (the CPU–CUDA differences measured by ``bench/gpu_check.py``, README "CUDA"). Sections not
#: measured there take the loosest measured one. On the recorded device and versions: exact.
DRIFT_TOLERANCE: dict[str, float] = {
    "heads": 1e-4,
    "swin": 1e-4,
    "explorer": 1e-4,
    "rollout": 1e-3,  # gradient-weighted rollout; plain rollout measured within 1e-4
    "faithfulness": 1e-3,
    "lime": 2e-2,
    "maps": 2e-2,
    "perturb": 2e-2,
    "stats": 2e-2,
    "probe": 2e-2,
}
DEFAULT_DRIFT_TOLERANCE = 2e-2
#: Environment entries that describe the machine, not a version: they never refuse.
_NOT_VERSIONS = ("platform", "torch_threads")


class VerifyError(RuntimeError):
    """Verification cannot run: bad input (``exit_code`` 2) or refused drift (``exit_code`` 3)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class FileProblem:
    """A published file that does not match the manifest: ``problem`` is "differs", "missing" or "not listed"."""

    where: str  # "docs", "site" or "output"
    path: str
    problem: str


@dataclass
class NumberCheck:
    """One recomputed job against its published data file."""

    section: str
    model: str
    image: str
    file: str
    largest: float = 0.0
    where: str = ""
    error: str = ""  # the job could not be computed, or the structure differs
    tolerance: float = 0.0

    @property
    def matches(self) -> bool:
        return not self.error and self.largest <= self.tolerance


@dataclass
class SectionCheck:
    """Per section: how many sampled jobs were checked, how many match, and the largest difference."""

    section: str
    tolerance: float
    checks: list[NumberCheck] = field(default_factory=list)

    @property
    def checked(self) -> int:
        return len(self.checks)

    @property
    def matching(self) -> int:
        return sum(c.matches for c in self.checks)

    @property
    def differing(self) -> int:
        return self.checked - self.matching

    @property
    def largest(self) -> NumberCheck | None:
        """The check with the largest difference (an error counts as infinite)."""
        return max(self.checks, key=lambda c: math.inf if c.error else c.largest, default=None)


@dataclass
class VerifyResult:
    """What :func:`verify` found.

    Attributes:
        manifest: the manifest checked against.
        roots: the folders whose files were checked ("docs", "site" → path).
        files_checked: files hashed (docs, site and the run report).
        file_problems: files that differ from the manifest, are missing, or are not listed.
        sections: the numbers check per section (empty with ``sample=0``).
        drift: the differences from the recorded weights, versions or device that were allowed.
        exact: whether numbers had to match exactly (recorded device and versions).
    """

    manifest: Path
    roots: dict[str, str] = field(default_factory=dict)
    files_checked: int = 0
    file_problems: list[FileProblem] = field(default_factory=list)
    sections: list[SectionCheck] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    exact: bool = True

    @property
    def ok(self) -> bool:
        return not self.file_problems and all(s.differing == 0 for s in self.sections)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


# --------------------------------------------------------------------------- numbers


def compare_numbers(published: Any, recomputed: Any, path: str = "$") -> Iterator[tuple[str, float]]:
    """(JSON path, absolute difference) of every leaf of two JSON values, walked together.

    Numbers give their absolute difference (two NaNs, or equal infinities, are 0); any other
    leaf (string, bool, null) and any difference in structure (a key or list item on one side
    only, another type) gives ``inf`` at its path.

    >>> dict(compare_numbers({"a": [1, 2.5]}, {"a": [1, 2.0]}))
    {'$.a[0]': 0.0, '$.a[1]': 0.5}
    """
    number = (int, float)
    if isinstance(published, bool) or isinstance(recomputed, bool):
        yield path, 0.0 if published is recomputed else math.inf
    elif isinstance(published, number) and isinstance(recomputed, number):
        a, b = float(published), float(recomputed)
        if a == b or (math.isnan(a) and math.isnan(b)):
            yield path, 0.0
        else:
            diff = abs(a - b)
            yield path, math.inf if math.isnan(diff) else diff
    elif isinstance(published, dict) and isinstance(recomputed, dict):
        for key in sorted(set(published) | set(recomputed), key=str):
            sub = f"{path}.{key}"
            if key not in published or key not in recomputed:
                yield sub, math.inf
            else:
                yield from compare_numbers(published[key], recomputed[key], sub)
    elif isinstance(published, list) and isinstance(recomputed, list):
        for i in range(max(len(published), len(recomputed))):
            if i >= len(published) or i >= len(recomputed):
                yield f"{path}[{i}]", math.inf
            else:
                yield from compare_numbers(published[i], recomputed[i], f"{path}[{i}]")
    else:
        yield path, 0.0 if published == recomputed else math.inf


def largest_difference(published: Any, recomputed: Any) -> tuple[float, str]:
    """The largest absolute difference between two JSON values and its path ((0.0, "") when equal)."""
    largest, where = 0.0, ""
    for path, diff in compare_numbers(published, recomputed):
        if diff > largest:
            largest, where = diff, path
    return largest, where


def sample_rank(seed: int, *parts: str) -> str:
    """The seeded order in which jobs are sampled (stable across runs and machines)."""
    return hashlib.sha256("\0".join([str(seed), *parts]).encode("utf-8", "surrogateescape")).hexdigest()


# --------------------------------------------------------------------------- files


@dataclass
class _Published:
    """Where a gallery's files are: the manifest, the folders it lists, and where data files are read."""

    manifest_path: Path
    manifest: dict[str, Any]
    roots: dict[str, Path]  # "docs" / "site" → folder
    data_root: Path
    output: Path | None


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path``, checked against its own hash.

    Raises:
        VerifyError: missing, unreadable, not a manifest, or edited (exit 2).
    """
    if not path.is_file():
        raise VerifyError(f"no manifest: {path} does not exist (was this folder built by vit-gallery build, "
                          "version with `verify`?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VerifyError(f"the manifest {path} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("docs"), dict) or "sha256" not in manifest:
        raise VerifyError(f"{path} is not a vit-gallery manifest")
    if manifest_digest(manifest) != manifest["sha256"]:
        raise VerifyError(f"the manifest {path} was changed after the build (its own hash does not match): "
                          "nothing can be checked against it")
    return manifest


def locate(target: Path, site: Path | None = None) -> _Published:
    """The manifest and folders of an output folder (``docs/`` inside) or of a built site (``index.html``)."""
    target = Path(target)
    if not target.is_dir():
        raise VerifyError(f"{target} is not a folder: give a build's output folder or a built site")
    manifest_path = target / MANIFEST
    manifest = read_manifest(manifest_path)
    if (target / "docs").is_dir():
        roots = {"docs": target / "docs"}
        site = site or (Path(manifest["site_dir"]) if manifest.get("site_dir") else None)
        if site is not None and manifest.get("site") is not None and site.is_dir():
            roots["site"] = site
        return _Published(manifest_path, manifest, roots, target / "docs", target)
    if (target / "index.html").is_file():
        if manifest.get("site") is None:
            raise VerifyError(f"the manifest {manifest_path} lists no site")
        return _Published(manifest_path, manifest, {"site": target}, target, None)
    raise VerifyError(f"{target} is neither a build's output folder (docs/ inside) nor a built site (index.html)")


def check_files(published: _Published) -> tuple[int, list[FileProblem]]:
    """Hash every published file; (files checked, the ones that differ from the manifest)."""
    problems: list[FileProblem] = []
    checked = 0
    for where, root in published.roots.items():
        listed: dict[str, str] = published.manifest.get(where) or {}
        try:
            found = file_hashes(root)
        except OSError as exc:
            raise VerifyError(f"cannot read {root}: {exc}") from None
        checked += len(found)
        for rel in sorted(set(listed) | set(found)):
            if rel not in found:
                problems.append(FileProblem(where, rel, "missing"))
            elif rel not in listed:
                problems.append(FileProblem(where, rel, "not listed"))
            elif found[rel] != listed[rel]:
                problems.append(FileProblem(where, rel, "differs"))
    report = published.output / "run_report.json" if published.output else None
    if report is not None and published.manifest.get("run_report_sha256"):
        checked += 1
        if not report.is_file():
            problems.append(FileProblem("output", "run_report.json", "missing"))
        elif sha256_file(report) != published.manifest["run_report_sha256"]:
            problems.append(FileProblem("output", "run_report.json", "differs"))
    return checked, problems


# --------------------------------------------------------------------------- recompute


def version_drift(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"package: recorded → here"`` for every package version that differs."""
    return [f"{name}: {recorded[name]} in the manifest, {current.get(name, 'not installed')} here"
            for name in sorted(recorded) if name not in _NOT_VERSIONS and recorded[name] != current.get(name)]


def _load_config(published: _Published, config_path: Path | None, device: str | None, scratch: Path):
    from .config.loading import load_config
    from .config.settings import ConfigError

    path = config_path or (Path(published.manifest["config"]) if published.manifest.get("config") else None)
    if path is None or not path.is_file():
        raise VerifyError(f"the config {path or '(none recorded)'} is not there: give it with --config")
    try:
        config = load_config(path, {"run.device": device} if device else {})
    except ConfigError as exc:
        raise VerifyError(f"config error: {exc}") from None
    # Anything a section writes (a probe's materialised dataset) goes to a scratch folder, not the build's.
    return config.model_copy(update={"output": scratch}), path


def _pin_threads(environment: dict[str, Any]) -> None:
    """Use the recorded torch thread count: reductions round differently under other counts."""
    threads = str(environment.get("torch_threads", ""))
    if threads.isdigit():
        import torch

        torch.set_num_threads(int(threads))


def recompute(published: _Published, *, config_path: Path | None, sample: int | None, seed: int,
              allow_drift: bool, device: str | None, log: Callable[[str], None]) -> tuple[list[SectionCheck],
                                                                                        list[str], bool]:
    """Compute a seeded sample of jobs again and compare them with the published data files.

    Returns:
        (per-section checks, allowed drift, whether the comparison was exact).

    Raises:
        VerifyError: no config (2); weights or versions differ from the manifest without
            ``allow_drift`` (3).
    """
    from .pipeline.report import environment_versions

    manifest = published.manifest
    drift = version_drift(manifest.get("environment", {}), environment_versions())
    if drift and not allow_drift:
        raise VerifyError("refused: package versions differ from the manifest (numbers would not be exact); "
                          "install the recorded versions or pass --allow-version-drift:\n  " + "\n  ".join(drift), 3)
    with tempfile.TemporaryDirectory(prefix="vit-gallery-verify-") as scratch:
        config, _ = _load_config(published, config_path, device, Path(scratch))
        if manifest.get("device") and config.run.device != manifest["device"]:
            drift.append(f"device: {manifest['device']} in the manifest, {config.run.device} here")
        models = _load_models(config, manifest, allow_drift, drift)
        exact = not drift
        _pin_threads(manifest.get("environment", {}))
        jobs = _sampled_jobs(config, models, published.data_root, sample, seed)
        sections: dict[str, SectionCheck] = {}
        for n, (planned, data_file) in enumerate(jobs, 1):
            name = planned.section.name
            tolerance = 0.0 if exact else DRIFT_TOLERANCE.get(name, DEFAULT_DRIFT_TOLERANCE)
            check = _check_job(planned, data_file, published.data_root, tolerance)
            sections.setdefault(name, SectionCheck(name, tolerance)).checks.append(check)
            log(f"[{n}/{len(jobs)}] {name} · {planned.job.model} · {planned.job.image}: "
                + (check.error or ("matches" if check.matches else f"differs by {check.largest:.3g} at {check.where}")))
    order = {s: i for i, s in enumerate(_section_names())}
    return sorted(sections.values(), key=lambda s: order.get(s.section, 99)), drift, exact


def _section_names() -> list[str]:
    from .sections import SECTIONS

    return [cls.name for cls in SECTIONS]


def _load_models(config, manifest: dict[str, Any], allow_drift: bool, drift: list[str]) -> list:
    """Load every model (hashing its weights) and hold their hashes against the manifest's."""
    from .models.loaded import WeightsError, load_model

    recorded = manifest.get("models", {})
    models, refused = [], []
    for model_config in config.models:
        try:
            model = load_model(model_config, config.run.device)
        except WeightsError as exc:
            raise VerifyError(f"model {model_config.name!r} cannot be loaded: {exc}") from None
        if model.name not in recorded:
            refused.append(f"model {model.name!r} is not in the manifest (models there: {sorted(recorded)})")
        elif model.weights_sha256 != recorded[model.name]:
            refused.append(f"model {model.name!r}: weights {model_config.weights} hash to {model.weights_sha256}, "
                           f"the manifest records {recorded[model.name]}")
        models.append(model)
    if refused and not allow_drift:
        raise VerifyError("refused: the weights are not the ones the gallery was built with:\n  "
                          + "\n  ".join(refused) + "\n(pass --allow-version-drift to compare anyway)", 3)
    drift.extend(refused)
    return models


def _sampled_jobs(config, models: list, data_root: Path, sample: int | None, seed: int) -> list[tuple[Any, Path]]:
    """(planned job, its published data file) for ``sample`` jobs per section (None: every job), in plan order."""
    from .data.images import scan_dataset, scan_images
    from .pipeline.plan import model_slugs, plan_model
    from .relevance.registry import RelevanceStore
    from .sections import SECTIONS

    images, _ = scan_dataset(config.images) if config.dataset.enabled else scan_images(config.images)
    sections = [s for s in (cls(config) for cls in SECTIONS) if s.enabled()]
    store = RelevanceStore(None)  # maps in memory only: nothing is read from the build's cache
    for section in sections:
        section.use_cache = False
        section.store = store
    slugs = model_slugs(config)
    candidates: list[tuple[Any, Path]] = []
    for model in models:
        for planned in plan_model(model, sections, images):
            rel = Path("data") / planned.section.name / slugs[model.name] / f"{planned.job.image}.json"
            if planned.job.key and (data_root / rel).is_file():  # failed or skipped jobs publish no data
                candidates.append((planned, rel))
    if sample is None:
        return candidates
    chosen: set[int] = set()
    for name in {p.section.name for p, _ in candidates}:
        ranked = sorted((i for i, (p, _) in enumerate(candidates) if p.section.name == name),
                        key=lambda i: sample_rank(seed, name, candidates[i][0].job.model, candidates[i][0].job.image))
        chosen.update(ranked[:sample])
    return [c for i, c in enumerate(candidates) if i in chosen]


def _check_job(planned, rel: Path, data_root: Path, tolerance: float) -> NumberCheck:
    """Compute one job again and compare it with its published data file."""
    from .pipeline.outcomes import JobSkipped
    from .pipeline.runner import as_stored

    job = planned.job
    check = NumberCheck(planned.section.name, job.model, job.image, rel.as_posix(), tolerance=tolerance)
    try:
        published = json.loads((data_root / rel).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        check.error = f"the data file cannot be read: {exc}"
        return check
    if not isinstance(published, dict) or "result" not in published:
        check.error = "the data file has no result"
        return check
    if published.get("cache_key") != job.key:
        check.error = ("its cache key differs from the published one: the config, images, weights or generator "
                       "version are not the ones it was built from")
        return check
    try:
        record = as_stored(planned.compute())
    except JobSkipped as exc:
        check.error = f"skipped here: {exc}"
        return check
    except Exception as exc:  # noqa: BLE001 - a job that fails here is a difference, reported with its error
        check.error = f"could not be computed: {type(exc).__name__}: {exc}"
        return check
    check.largest, where = largest_difference(published["result"], record.meta)
    check.where = f"{rel.as_posix()} {where.replace('$', '$.result', 1)}" if where else ""
    return check


def verify(target: Path, *, config_path: Path | None = None, site: Path | None = None, sample: int | None = 3,
           seed: int = 0, allow_drift: bool = False, device: str | None = None,
           log: Callable[[str], None] = lambda message: None) -> VerifyResult:
    """Check a built gallery against its manifest, and a seeded sample of its numbers against a recompute.

    Args:
        target: a build's output folder (``manifest.json`` and ``docs/``), or a built site.
        config_path: the gallery's config (default: the one the manifest records).
        site: the built site to check as well (default: the manifest's ``site_dir`` when it exists).
        sample: jobs recomputed per section; None for all, 0 for the files check only.
        seed: the sample's seed.
        allow_drift: compare even when weights or package versions differ from the manifest
            (numbers then within :data:`DRIFT_TOLERANCE`).
        device: compute on this device instead of the config's (numbers within the tolerances).

    Raises:
        VerifyError: bad input (``exit_code`` 2) or refused drift (3).
    """
    published = locate(Path(target), Path(site) if site else None)
    result = VerifyResult(manifest=published.manifest_path, roots={k: str(v) for k, v in published.roots.items()})
    result.files_checked, result.file_problems = check_files(published)
    log(f"{result.files_checked} files hashed, {len(result.file_problems)} differ from the manifest")
    if sample is None or sample > 0:
        result.sections, result.drift, result.exact = recompute(
            published, config_path=config_path, sample=sample, seed=seed, allow_drift=allow_drift,
            device=device, log=log)
    return result


def report_lines(result: VerifyResult) -> Iterator[str]:
    """The human summary of a :class:`VerifyResult`."""
    yield f"manifest: {result.manifest}"
    yield f"files: {result.files_checked} checked, {len(result.file_problems)} differ"
    for where, folder in result.roots.items():
        yield f"  {where}: {folder}"
    if "site" not in result.roots:
        yield "  site: not checked (give --site DIR to check the built site too)"
    for p in result.file_problems:
        yield f"  {p.problem.upper():<10} {p.where}/{p.path}"
    for line in result.drift:
        yield f"allowed drift: {line}"
    if result.sections:
        yield "numbers: " + ("exact (recorded device and versions)" if result.exact
                             else "within each section's tolerance (device or versions differ)")
        yield f"  {'section':<13} {'checked':>7} {'match':>6} {'differ':>6}  {'tolerance':>9}  largest difference"
        for s in result.sections:
            top = s.largest
            largest = ("" if top is None else f"{top.error} ({top.file})" if top.error
                       else f"{top.largest:.3g} at {top.where}" if top.where else "0")
            yield f"  {s.section:<13} {s.checked:>7} {s.matching:>6} {s.differing:>6}  {s.tolerance:>9.0e}  {largest}"
    yield "verified: everything matches" if result.ok else "NOT VERIFIED: see the differences above"
