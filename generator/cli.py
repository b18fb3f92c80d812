"""Command-line interface: Click commands only. Each builds its arguments and delegates."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from ._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vit-gallery")
def main() -> None:
    """Explain vision transformers (timm ViT and Swin) and build a browsable gallery."""


def _load_config_or_exit(config_path: Path, overrides: dict):
    from .config.loading import ConfigError, load_config

    try:
        return load_config(config_path, overrides)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)


def _build_options(fn):
    """The options shared by `build` and the per-section commands."""
    for option in reversed([
        click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                     default=Path("gallery.toml"), show_default=True, help="The gallery's TOML config."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None,
                     help="Override [run] device."),
        click.option("--no-cache", is_flag=True, help="Recompute everything (the cache is neither read nor written)."),
        click.option("--fail-fast", is_flag=True, default=None, help="Stop at the first failure."),
        click.option("--no-site", is_flag=True, help="Write figures and Markdown pages but do not run mkdocs."),
        click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Worker processes that draw figures (outputs are identical for any value)."),
        click.option("--quiet", is_flag=True, help="No progress bars (the libraries' own included)."),
        click.option("--strict", is_flag=True,
                     help="Count skipped jobs (a probe dataset that is not there) as failures: exit 1."),
        click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                     help="Where compute runs: this process, or a Dask cluster (outputs are identical)."),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="With --executor dask: join the Dask scheduler at ADDRESS (e.g. tcp://host:8786)."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="With --executor dask and no --scheduler: start a LocalCluster of N worker processes."),
        click.option("--chunk-size", type=click.IntRange(min=1), default=8, show_default=True,
                     help="With --executor dask: images per task."),
    ]):
        fn = option(fn)
    return fn


@main.command()
@_build_options
def build(config_path: Path, device, no_cache: bool, fail_fast, no_site: bool, jobs: int, quiet: bool,
          strict: bool, **executor) -> None:
    """Run every model over every image and enabled section, write the pages, build the site.

    Exit status: 0 when everything succeeded (skipped jobs, such as a probe dataset that is not
    there, are reported but do not count unless --strict), 1 when anything failed (the rest is
    kept and listed in the run report), 2 for a bad config.
    """
    _build(config_path, device, no_cache, fail_fast, no_site, jobs, quiet, only=None, strict=strict, **executor)


def _build(config_path, device, no_cache, fail_fast, no_site, jobs, quiet, only: str | None, strict: bool = False,
           executor: str = "local", scheduler: str | None = None, workers: int | None = None,
           chunk_size: int = 8) -> None:
    if quiet:  # the libraries' own bars (LIME's samples, Score-CAM's channels): tqdm reads this on import
        os.environ.setdefault("TQDM_DISABLE", "1")
    from .store.atomic import write_fault
    from .builder import build as build_gallery
    from .pipeline.report import summary_lines
    from .pipeline.runner import FailFast, OutputWriteError
    from .sections import SECTIONS

    overrides = {"run.device": device} if device else {}
    if only is not None:
        overrides.update({f"sections.{cls.name}.enabled": cls.name == only for cls in SECTIONS})
    if executor == "local" and (scheduler or workers):
        click.echo("error: --scheduler and --workers need --executor dask", err=True)
        sys.exit(2)
    if scheduler and workers:
        click.echo("error: give --scheduler (join a cluster) or --workers (start one here), not both", err=True)
        sys.exit(2)
    config = _load_config_or_exit(config_path, overrides)
    if config.run.device in ("cuda", "mps"):  # "cpu" and "auto" cannot fail; checking needs torch
        from .models.loading import resolve_device

        try:
            resolve_device(config.run.device)
        except ValueError as exc:
            click.echo(f"config error: {config_path}: [run.device] {exc}", err=True)
            sys.exit(2)
    command = "vit-gallery " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        outcome = build_gallery(config, use_cache=not no_cache, fail_fast=fail_fast, jobs=jobs, site=not no_site,
                                progress=not quiet, command=command, log=lambda m: click.echo(m, err=True),
                                executor=executor, scheduler=scheduler, workers=workers, chunk_size=chunk_size)
    except FailFast as exc:
        click.echo(f"stopped at the first failure (--fail-fast): {exc}", err=True)
        sys.exit(1)
    except (OutputWriteError, OSError) as exc:
        if isinstance(exc, OSError) and write_fault(exc) is None:
            raise
        _stop_on_write_fault(exc)
    if outcome.site_error:
        click.echo(outcome.site_error, err=True)
    for line in summary_lines(outcome.run):
        click.echo(line)
    if outcome.site_dir is not None:
        click.echo(f"site: {outcome.site_dir}")
    sys.exit(1 if outcome.exit_code or (strict and outcome.run.skipped) else 0)


def _stop_on_write_fault(exc: BaseException) -> None:
    """One clear message and what the run had done, then exit 1 (no traceback)."""
    from .store.atomic import write_fault
    from .pipeline.report import summary_lines

    fault = write_fault(exc)
    message = str(exc) if fault is None or str(exc) != str(fault) else f"cannot write {fault.filename}: {fault.strerror}"
    click.echo(f"stopped: {message}. Files already written are complete (every write is atomic); "
               "free space or fix the folder's permissions and run the same command again to resume.", err=True)
    result = getattr(exc, "result", None)
    if result is not None:
        for line in summary_lines(result):
            click.echo(line)
    sys.exit(1)


def _section_command(name: str, title: str):
    @_build_options
    def command(config_path, device, no_cache, fail_fast, no_site, jobs, quiet, strict, **executor) -> None:
        _build(config_path, device, no_cache, fail_fast, no_site, jobs, quiet, only=name, strict=strict, **executor)

    command.__doc__ = f"Build only the {title!r} section (every other section is switched off for this run)."
    return click.command(name)(command)


def _register_section_commands() -> None:
    from .sections import SECTIONS

    for cls in SECTIONS:
        main.add_command(_section_command(cls.name, cls.title))


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("gallery.toml"),
              show_default=True, help="The gallery's TOML config.")
@click.option("--dpi", type=click.IntRange(50, 1200), default=300, show_default=True, help="PNG resolution.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("figures-export"),
              show_default=True, help="Folder that receives figures/<section>/<model>/<image>.{png,pdf}.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes that draw.")
@click.option("--zip", "zip_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every exported figure (PNG, PDF, data) into one deterministic zip.")
def figures(config_path: Path, dpi: int, out_dir: Path, jobs: int, zip_path: Path | None) -> None:
    """Export only the figures (PNG at --dpi, and PDF) into a folder, from cached results where possible."""
    from .builder import export_figures
    from .pipeline.runner import OutputWriteError
    from .store.safepaths import folder_problem

    config = _load_config_or_exit(config_path, {})
    protected = {"the image folder": config.images}
    if config.source is not None:
        protected["the config file's folder"] = config.source.parent
    problem = folder_problem(out_dir.resolve(), "--out", protected)
    if problem:
        click.echo(f"error: [--out] {problem}", err=True)
        sys.exit(2)
    try:
        result = export_figures(config, out_dir, dpi=dpi, jobs=jobs, progress=True,
                                log=lambda m: click.echo(m, err=True))
    except OutputWriteError as exc:
        _stop_on_write_fault(exc)
    count = sum(len(r.figures) for r in result.results)
    click.echo(f"{count} figures (PNG at {dpi} dpi + PDF) in {out_dir / 'figures'}")
    if zip_path is not None:
        from .site.pages import write_figure_archive

        archive = write_figure_archive(result, zip_path.resolve())
        if archive is not None:
            click.echo(f"archive: {archive} ({archive.stat().st_size / 1e6:.1f} MB)")
    sys.exit(result.exit_code)


@main.command("clean-cache")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("gallery.toml"),
              show_default=True, help="The gallery whose cache to remove.")
def clean_cache(config_path: Path) -> None:
    """Delete the result cache of a gallery (figures and pages stay until the next build)."""
    from .store.cache import ResultCache

    config = _load_config_or_exit(config_path, {})
    cache = ResultCache(config.output / "cache")
    size = cache.size_bytes()
    cache.clear()
    click.echo(f"removed {cache.root} ({size / 1e6:.1f} MB)")


@main.command("train-demo")
@click.option("--model", "model_kind", type=click.Choice(["vit", "swin", "all"]), default="all", show_default=True,
              help="Which embedded model to train.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (default: the shipped recipe).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (default: the recipe's); results are reproducible for a fixed thread count.")
@click.option("--train-limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N images only (smoke tests).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with the Fashion-MNIST idx .gz files (default: Debian's package).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write weights and model cards (default: the package's weights folder).")
def train_demo(model_kind, epochs, seed, threads, train_limit, data_dir, out_dir) -> None:
    """Train the embedded Fashion-MNIST ViT and/or Swin that the offline gallery ships."""
    from .models import embedded
    from .devtools.train_demo import FASHION_MNIST_DIR, DatasetMissingError, TrainSettings, save, train

    names = {"vit": [embedded.VIT_NAME], "swin": [embedded.SWIN_NAME]}.get(
        model_kind, [embedded.VIT_NAME, embedded.SWIN_NAME]
    )
    command = "python -m generator " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    for name in names:
        defaults = TrainSettings(**embedded.TRAIN_RECIPES[name])
        settings = TrainSettings(**{**defaults.__dict__, "seed": seed, "train_limit": train_limit,
                                    **({"threads": threads} if threads else {}),
                                    **({"epochs": epochs} if epochs else {})})
        try:
            model, card = train(name, settings, data_dir or FASHION_MNIST_DIR, log=click.echo)
        except DatasetMissingError as exc:
            raise click.ClickException(str(exc)) from exc
        path = save(model, card, out_dir or embedded.WEIGHTS_DIR, command)
        click.echo(f"{name}: test accuracy {card['test_accuracy']:.4f}; wrote {path}")


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The gallery's config (default: the one the manifest records).")
@click.option("--site", "site_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also check this built site (default: the site the manifest records, when it is there).")
@click.option("--sample", type=click.IntRange(min=0), default=3, show_default=True,
              help="Results recomputed per section (0: only the file hashes).")
@click.option("--all", "all_jobs", is_flag=True, help="Recompute every result.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None,
              help="Recompute on this device (numbers then within each section's tolerance).")
@click.option("--allow-version-drift", is_flag=True,
              help="Compare even when the weights or package versions differ from the manifest.")
def verify(folder: Path, config_path, site_dir, sample: int, all_jobs: bool, seed: int, device,
           allow_version_drift: bool) -> None:
    """Check a built gallery: every published file against the manifest's hashes, and a seeded sample
    of results recomputed with the recorded config, weights and versions.

    FOLDER is a build's output folder (manifest.json and docs/) or a built site. Exit status: 0 when
    everything matches, 1 when something differs, 2 for bad input (no folder, no or edited manifest,
    no config), 3 when the weights or a package version differ from the manifest (refused unless
    --allow-version-drift).
    """
    from .verify import VerifyError, report_lines, verify as verify_gallery

    try:
        result = verify_gallery(folder, config_path=config_path, site=site_dir, sample=None if all_jobs else sample,
                                seed=seed, allow_drift=allow_version_drift, device=device,
                                log=lambda m: click.echo(m, err=True))
    except VerifyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    for line in report_lines(result):
        click.echo(line)
    sys.exit(result.exit_code)


_register_section_commands()
