"""`make bench-quick` runs and writes valid JSON (benchmarks are not tests: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_quick_writes_valid_json(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "generator.devtools.bench", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["quick"] is True and results["versions"]["torch"]
    names = [r["name"] for r in results["rows"]]
    assert any(n.startswith("attention capture") for n in names)
    assert any(n.startswith("LIME vs its forward passes") for n in names)
    assert any(n.startswith("probe (cached features)") for n in names)
    assert any(n.startswith("warm rebuild") for n in names)
    from generator.methods.registered import LIBRARY_METHODS
    from generator.relevance import registered_methods

    labels = {cls.label for cls in registered_methods() if cls.name in LIBRARY_METHODS}
    for arch in ("vit_fmnist_patch4_28", "vit_tiny_patch16_224"):  # Score-CAM is off on the 224 px model
        rows = {r["name"].split(" vs its passes")[0]: r for r in results["rows"] if r["name"].endswith(arch)
                and " vs its passes" in r["name"]}
        assert set(rows) == labels - ({"Score-CAM"} if arch != "vit_fmnist_patch4_28" else set()), arch
        for r in rows.values():
            assert r["passes"] and all(p["count"] >= 1 and p["kind"] for p in r["passes"])
    assert any(n.startswith("faithfulness curves vs their forward passes") for n in names)
    for row in results["rows"]:
        assert row["ours_s"]["n"] >= 1 and row["ours_s"]["median"] > 0 and row["ratio"] > 0
    assert [p["images"] for p in results["scaling"]["points"]] == [1, 2]
    assert results["floor"]["matmul_gflops"] > 0
    assert results["executors"]["one_worker_vs_local"]["ratio"] > 0
    assert results["executors"]["workers_vs_threads"]["throughput_ratio"] > 0
    assert [p["images"] for p in results["dataset_scaling"]["points"]] == [10, 20, 40]
