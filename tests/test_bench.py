"""`make bench-smoke` runs every benchmark group and writes valid rows (benchmarks are not tests: no
timing is asserted, and smoke numbers are not measurements)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from generator.devtools import bench


def _kinds(names_by_group: dict[str, set[str]]) -> dict[str, set[str]]:
    return {group: {bench.row_kind(name) for name in names} for group, names in names_by_group.items()}


@pytest.mark.parametrize("scale", [bench.QUICK, bench.FULL], ids=lambda s: s.name)
def test_smoke_lists_the_rows_of_the_larger_runs(scale):
    """The smoke scale writes the same row groups, and in each the same rows up to model names and sizes."""
    assert set(bench.row_names(bench.SMOKE)) == set(bench.row_names(scale)) == set(bench.ROW_GROUPS)
    assert _kinds(bench.row_names(bench.SMOKE)) == _kinds(bench.row_names(scale))


def test_bench_smoke_writes_valid_rows(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "generator.devtools.bench", "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=1800, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    smoke = bench.SMOKE
    assert results["scale"] == "smoke" and results["quick"] is True and results["repeats"] == 1
    assert results["versions"]["torch"]

    # every registered group ran and wrote something: rows for the row groups, a section for the reports
    groups = {*bench.ROW_GROUPS, *bench.REPORTS}
    assert set(results["seconds"]) == set(results["cpu_seconds"]) == groups
    assert {r["group"] for r in results["rows"]} == set(bench.ROW_GROUPS)
    for name in bench.REPORTS:
        assert results[name], name

    # the rows are exactly the listed ones (which match the quick and full listings up to models and sizes)
    written: dict[str, set[str]] = {}
    for r in results["rows"]:
        written.setdefault(r["group"], set()).add(r["name"])
    assert len(results["rows"]) == sum(len(names) for names in written.values())  # no name twice
    assert written == bench.row_names(smoke)
    for r in results["rows"]:
        assert r["ours_s"]["n"] >= 1 and r["ours_s"]["median"] > 0, r["name"]
        assert r["baseline_s"]["n"] >= 1 and r["baseline_s"]["median"] > 0, r["name"]
        assert r["ratio"] > 0 and r["goal"] and r["goal_met"] in (True, False, None), r["name"]

    # a row per library method on the embedded ViT, each with the passes it is timed against
    from generator.relevance.registry import registered_methods

    labels = {cls.label for cls in registered_methods() if cls.wraps}
    assert [arch for arch, *_ in smoke.methods] == ["vit_fmnist_patch4_28"]
    methods = {r["name"].split(" vs its passes")[0]: r for r in results["rows"] if r["group"] == "methods"}
    assert set(methods) == labels
    for r in methods.values():
        assert r["passes"] and all(p["count"] >= 1 and p["kind"] in bench.PASS_KINDS for p in r["passes"])

    # the reports, in the shapes the smoke scale gives
    stats = results["stats_overhead"]
    assert len(stats["runs"]["on"]) == len(stats["runs"]["off"]) == 1 and stats["cpu_ratio"] > 0
    assert [p["images"] for p in results["scaling"]["points"]] == list(smoke.scaling_images)
    assert all(p["wall_s"] > 0 and p["peak_rss_mib"] > 0 for p in results["scaling"]["points"])
    memory = results["memory"]
    assert memory["model"] == smoke.memory_model[0]
    for kind, work in smoke.memory_work:
        assert [p["work"] for p in memory[kind]["points"]] == list(work)
        assert all(p["peak_mib"] > 0 for p in memory[kind]["points"])
    large = results["large_images"]
    assert large["side_px"] == smoke.large_side and [p["images"] for p in large["points"]] == [1, 4]
    assert large["ratio_4_vs_1"] > 0
    sweep = results["batch_sizes"]
    assert set(sweep) == {arch for arch, *_ in smoke.batch_sizes}
    for arch, _, batches in smoke.batch_sizes:
        assert set(sweep[arch]["by_batch"]) == {str(b) for b in batches}  # JSON keys
        assert sweep[arch]["auto_vs_best"] > 0 and sweep[arch]["lime_default_10_vs_best"] > 0
    floor = results["floor"]
    assert floor["matmul_gflops"] > 0 and set(floor["models"]) == set(smoke.floor_models)
    assert all(m["forward_vs_floor"] > 0 for m in floor["models"].values())
    executors = results["executors"]
    assert executors["images"] == smoke.executor_images
    assert executors["one_worker_vs_local"]["ratio"] > 0
    assert executors["workers_vs_threads"]["throughput_ratio"] > 0
    dataset = results["dataset_scaling"]
    assert [p["images"] for p in dataset["points"]] == list(smoke.dataset_images)
    assert all(p["results"] > 0 and p["failures"] == 0 for p in dataset["points"])
    assert len(dataset["slopes"]) == len(smoke.dataset_images) - 1
