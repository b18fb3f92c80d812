"""The swappable executor: local vs Dask (1 and 2 workers) give byte-identical outputs, a worker
that dies mid-task costs nothing, failures name their worker, and the CLI checks its options.

Clusters are LocalClusters on 127.0.0.1 (processes, one thread each, no dashboard); the gallery
is tiny (one 28-px model, two images, LIME at 50 samples).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.builder import build
from generator.config.loading import load_config
from generator.pipeline.executors import ExecutorSpec, ModelPlugin

from .conftest import write_synthetic_images

pytest.importorskip("distributed")


def small_config(root: Path, images: Path, extra: str = "") -> Path:
    """One tiny random-weight ViT: heads, rollout, LIME (50 samples) and faithfulness (4×4 grid, one random
order, of the attention maps: its tables are CSV, and it reads maps through the shared relevance store)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "gallery.toml"
    path.write_text(f"""
title = "Executors"
images = "{images}"
output = "{root / 'build'}"
site_dir = "{root / 'site'}"

[[models]]
name = "Tiny ViT"
arch = "vit_fmnist_patch4_28"
weights = "random:0"

[sections.lime]
num_samples = 50
segmentation = "slic"
segmentation_params = {{ n_segments = 8 }}

[sections.maps]
enabled = false
[sections.probe]
enabled = false
[sections.faithfulness]
grid = 4
step = 4
random_seeds = [0]
randomise_blocks = 0
[methods.lime]
enabled = false
{extra}
""", encoding="utf-8")
    return path


def outputs(config: Path) -> dict[str, bytes]:
    """Every data file, table and figure (PNG and PDF) a build wrote, by relative path."""
    docs = load_config(config).output / "docs"
    return {p.relative_to(docs).as_posix(): p.read_bytes()
            for folder in ("data", "figures") for p in sorted((docs / folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("executor-images")
    write_synthetic_images(folder, count=2, size=28)
    return folder


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two worker processes on 127.0.0.1, shared by the tests that join a running scheduler.

    Its workers can be made to die once (see ``generator.pipeline.executors.DIE_ONCE_ENV``) by creating
    ``armed`` in the folder yielded with the address.
    """
    from distributed import LocalCluster

    folder = tmp_path_factory.mktemp("die-once")
    mp = pytest.MonkeyPatch()
    mp.setenv("VIT_GALLERY_TEST_DIE_ONCE", str(folder))  # inherited by the workers spawned now
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as running:
        mp.undo()
        yield running.scheduler_address, folder


@pytest.fixture(scope="module")
def local_reference(images, tmp_path_factory) -> dict[str, bytes]:
    config = small_config(tmp_path_factory.mktemp("local"), images)
    result = build(load_config(config), site=False)
    assert result.run.ok, result.run.failures
    assert result.run.executor == {"kind": "local"}
    files = outputs(config)
    assert any(k.startswith("data/") for k in files) and any(k.endswith(".png") for k in files)
    assert any(k.endswith(".csv") for k in files)
    return files


@pytest.mark.parametrize("workers, chunk_size", [(1, 8), (2, 1)])
def test_dask_outputs_are_byte_identical_to_local(local_reference, images, tmp_path, workers, chunk_size, cluster):
    config = small_config(tmp_path, images)
    # one worker: a LocalCluster the build starts itself (--workers 1); two: join a running one (--scheduler)
    where = {"workers": 1} if workers == 1 else {"scheduler": cluster[0]}
    result = build(load_config(config), site=False, executor="dask", chunk_size=chunk_size, **where)
    assert result.run.ok, result.run.failures
    info = result.run.executor
    assert info["kind"] == "dask" and len(info["workers_seen"]) == workers
    jobs = {}
    for r in result.run.results:
        jobs[r.section] = jobs.get(r.section, 0) + 1
    assert len(jobs) == 6 and sorted(set(jobs.values())) == [1, 2]  # per image sections; stats: one per model
    assert info["tasks"] == sum(-(-n // chunk_size) for n in jobs.values())  # one task per (section, chunk)
    assert outputs(config) == local_reference
    report = json.loads((load_config(config).output / "run_report.json").read_text())
    assert report["executor"]["kind"] == "dask" and report["failures_per_worker"] == {}
    if workers == 1:  # a gallery built on Dask verifies against a local recompute, exactly
        from generator.verify import verify

        checked = verify(load_config(config).output, sample=1)
        assert checked.ok and checked.exact, (checked.file_problems, [c for s in checked.sections for c in s.checks])
        assert {s.section for s in checked.sections} == set(jobs)


def test_worker_killed_mid_task_is_retried_with_identical_outputs(local_reference, images, tmp_path, cluster):
    address, folder = cluster
    (folder / "armed").touch()  # the first task to store a result then kills its worker process
    try:
        config = small_config(tmp_path / "g", images)
        result = build(load_config(config), site=False, executor="dask", scheduler=address, chunk_size=2)
    finally:
        (folder / "armed").unlink()
    assert (folder / "died").is_file(), "a worker should have died"
    assert result.run.ok, result.run.failures
    assert outputs(config) == local_reference


def test_failures_name_their_worker(images, tmp_path, cluster):
    config = small_config(tmp_path, images)
    cfg = load_config(config)
    # a section whose settings break compute on the worker: LIME with an impossible segmentation
    bad = cfg.model_copy(update={"sections": cfg.sections.model_copy(update={
        "lime": cfg.sections.lime.model_copy(update={"segmentation_params": {"no_such_param": 1}})})})
    result = build(bad, site=False, executor="dask", scheduler=cluster[0], chunk_size=1)
    lime = [f for f in result.run.failures if f.section == "lime"]
    assert len(lime) == 2 and all(f.worker and f.worker.startswith("tcp://127.0.0.1:") for f in lime)
    assert all("no_such_param" in f.error for f in lime)
    report = json.loads((cfg.output / "run_report.json").read_text())
    per_worker = {}
    for f in lime:
        per_worker[f.worker] = per_worker.get(f.worker, 0) + 1
    assert report["failures_per_worker"] == per_worker
    assert [f["worker"] for f in report["failures"]] == [f.worker for f in lime]
    assert len([r for r in result.run.results if r.section != "lime"]) == 9  # the rest went on (5 sections)


def test_model_plugin_loads_each_model_once(tmp_path):
    from generator.config.settings import ModelConfig

    plugin = ModelPlugin(max_models=1)
    vit = ModelConfig(name="v", arch="vit_fmnist_patch4_28", weights="random:0")
    swin = ModelConfig(name="s", arch="swin_fmnist_patch2_28", weights="random:1")
    from generator.models.loaded import load_model

    sha_v, sha_s = load_model(vit).weights_sha256, load_model(swin).weights_sha256
    first = plugin.model(vit, sha_v, "cpu", tmp_path)
    assert plugin.model(vit, sha_v, "cpu", tmp_path) is first and plugin.loads == 1
    plugin.model(swin, sha_s, "cpu", tmp_path)  # evicts the ViT (max_models=1)
    assert plugin.loads == 2 and len(plugin.models) == 1
    with pytest.raises(RuntimeError, match="weights differ"):
        plugin.model(vit, "0" * 64, "cpu", tmp_path)


def test_executor_spec_checks():
    with pytest.raises(ValueError, match="need --executor dask"):
        ExecutorSpec(kind="local", workers=2)
    with pytest.raises(ValueError, match="unknown executor"):
        ExecutorSpec(kind="ray")
    with pytest.raises(ValueError, match="chunk_size"):
        ExecutorSpec(kind="dask", chunk_size=0)


def test_cli_refuses_cluster_options_without_dask(tmp_path, images):
    from click.testing import CliRunner

    from generator.cli import main

    config = small_config(tmp_path, images)
    for args in (["--workers", "2"], ["--scheduler", "tcp://127.0.0.1:1"],
                 ["--executor", "dask", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]):
        result = CliRunner().invoke(main, ["build", "--config", str(config), "--no-site", "--quiet", *args])
        assert result.exit_code == 2, result.output
    assert "--chunk-size" in CliRunner().invoke(main, ["build", "--help"]).output
